"""Step 4 of normalisation, may we read it: an asset's href resolved against the item, rewritten
by the first matching mirror and checked against the allowed roots (``href_not_allowed``), and,
for local files, whether they exist (``asset_missing``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from pipeline.catalog.items.options import Mirror, NormaliseOptions, reject
from pipeline.catalog.stacdoc import ItemDoc
from pipeline.io.hrefs import HrefPolicy, relative_to, resolve_href


def metadata_href(doc: ItemDoc, key: str, options: NormaliseOptions) -> str:
    raw = str(doc.assets[key].get("href") or "")
    href = mirror_href(resolve_href(raw, doc.self_href), options.mirrors)[0]
    return options.policy.check_metadata(href, item_id=doc.id, asset=key)


def checked_href(
    doc: ItemDoc, key: str, options: NormaliseOptions, raw: str | None = None
) -> tuple[str, bool]:
    """(href, mirrored): resolved against the item, rewritten by the first matching mirror,
    and checked against the allowed roots (raises HrefNotAllowed)."""
    if raw is None:
        raw = str(doc.assets[key].get("href") or "")
    href, mirrored = mirror_href(resolve_href(raw, doc.self_href), options.mirrors)
    if _plainly_allowed_url(options.policy, href):
        return href, mirrored
    return options.policy.check(href, item_id=doc.id, asset=key), mirrored


def _plainly_allowed_url(policy: HrefPolicy, href: str) -> bool:
    """A fast yes for the common case, never a yes that ``policy.check`` would refuse
    (:meth:`HrefPolicy.plainly_allows`: roots compared by origin and path segments)."""
    return policy.plainly_allows(href)


def mirror_href(href: str, mirrors: Sequence[Mirror]) -> tuple[str, bool]:
    """Rewrite ``href`` by the first mirror it is below (origin and whole path segments)."""
    for prefix, target in mirrors:
        rest = relative_to(href, prefix)
        if rest is not None:
            if "://" in target:
                return target.rstrip("/") + "/" + rest, True
            return os.path.join(target, rest), True
    return href, False


def is_local(href: str) -> bool:
    return "://" not in href or href.startswith("file://")


def check_exists(doc: ItemDoc, key: str, href: str, options: NormaliseOptions) -> None:
    if options.check_files and is_local(href) and not os.path.isfile(href):
        raise reject(doc, "asset_missing", f"asset {key!r}: file {href} does not exist")


def can_read_header(href: str, options: NormaliseOptions) -> bool:
    """Only local files (already inside the allowed roots) are opened at ingest: a remote
    header would be read by GDAL's own HTTP client, which follows redirects anywhere."""
    return options.check_files and is_local(href)
