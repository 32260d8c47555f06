"""pystac-client's HTTP, kept inside the href policy: the API root's pages and links only.

A STAC API answers with links that pystac-client follows by itself: the landing page's
``search`` and ``conformance`` links, each page's ``next`` link (which may also carry a method,
headers and a body), and HTTP redirects. :class:`PolicedStacApiIO` checks every request URL and
every redirect hop with :meth:`HrefPolicy.check_link` (by default the API's own origin), and
refuses an answer whose declared length is over :data:`MAX_DOCUMENT_BYTES`. A refusal is kept in
:attr:`PolicedStacApiIO.refused` so that the caller can report it as ``href_not_allowed``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urljoin

from pystac_client.stac_api_io import StacApiIO

from pipeline.errors import DocumentTooLarge, HrefNotAllowed
from pipeline.io.documents import MAX_DOCUMENT_BYTES
from pipeline.io.hrefs import HrefPolicy


class PolicedStacApiIO(StacApiIO):
    """A StacApiIO whose every request and redirect hop stays inside ``policy``."""

    def __init__(self, policy: HrefPolicy, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.policy = policy
        self.refused: HrefNotAllowed | None = None
        self.session.hooks["response"].append(self._check_answer)

    def request(
        self,
        href: str,
        method: str | None = None,
        headers: dict[str, str] | None = None,
        parameters: dict[str, Any] | None = None,
    ) -> str:
        self._check(href, f"STAC API request {href}")
        return super().request(href, method=method, headers=headers, parameters=parameters)

    def _check(self, url: str, what: str) -> None:
        try:
            self.policy.check_link(url, what=what)
        except HrefNotAllowed as exc:
            self.refused = self.refused or exc
            raise

    def _check_answer(self, response, *args: Any, **kwargs: Any):
        """requests' response hook: runs for every answer, each redirect hop included, before
        the next hop is asked and before the body is read."""
        if response.is_redirect:
            target = urljoin(response.url, response.headers.get("location", ""))
            self._check(target, f"redirect from {response.url} to {target}")
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_DOCUMENT_BYTES:
            raise DocumentTooLarge(
                f"{response.url} answers {declared} bytes, over {MAX_DOCUMENT_BYTES}"
            )
        return response
