"""Kaleyra's result codes as the client reads them: success, never retried, fatal to an account."""

from __future__ import annotations

SUCCESS = "WA200"
PROFILE_FETCHED = "RBC024"  # "Get a Callback Profile by ID" succeeded
PROFILE_NOT_FOUND = "RBC302"  # "No profile exists with this id"
NOT_SENT = "NOT_SENT"  # the run was stopped before this request's first attempt
# Codes that mean "the request is wrong": sending it again cannot help.
NEVER_RETRY = frozenset({"WA400", "WA401", "RBC001", "E112", PROFILE_NOT_FOUND})
# Codes that condemn every request of the account (its key, SID or WABA), not just one number.
ACCOUNT_FATAL = frozenset({"RBC001", "WA401"})
# Kaleyra's own "busy" codes, handled like HTTP 429. None is documented yet; add one here if it appears.
BUSY_CODES: frozenset[str] = frozenset()
HINTS = {
    "RBC001": "check the account's sid and the API key in its environment variable",
    "WA401": "the account's waba_id is not on this Kaleyra account",
    "E112": "this phone number is not registered on the account's WABA",
}
