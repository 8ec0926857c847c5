"""A paginator for tables of years of history: it counts at most COUNT_CAP matching rows.

Django's paginator counts every matching row on every page load; over a million publications that
COUNT alone took 120-190 ms. Counting stops at the cap instead (COUNT over a LIMIT), so the pages
up to it stay reachable and the page says "more than 10,000": filters and search narrow the rest.
"""
from django.core.paginator import Paginator
from django.utils.functional import cached_property

COUNT_CAP = 10_000


class CappedCountPaginator(Paginator):
    """`count` is the number of matching rows up to COUNT_CAP; `capped` says there are more."""

    capped = False

    @cached_property
    def count(self):
        counted = self.object_list[:COUNT_CAP + 1].count()
        self.capped = counted > COUNT_CAP
        return min(counted, COUNT_CAP)

    @property
    def count_text(self):
        return f"{self.count:,}"
