"""The one way staff read a date and time, with its time zone: "2026-12-01 08:19 UTC" (Django's
locale format would say "Dec. 1, 2026, 8:19 a.m."). Inputs keep Django's defaults."""
DATETIME_FORMAT = "Y-m-d H:i T"
SHORT_DATETIME_FORMAT = "Y-m-d H:i T"
DATE_FORMAT = "Y-m-d"
SHORT_DATE_FORMAT = "Y-m-d"
TIME_FORMAT = "H:i"
MONTH_DAY_FORMAT = "F j"
YEAR_MONTH_FORMAT = "F Y"
FIRST_DAY_OF_WEEK = 1
