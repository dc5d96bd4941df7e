"""schemathesis hooks for the contract test (loaded through SCHEMATHESIS_HOOKS).

JSON Schema cannot state two cross-field rules of the API, which the contract states in
words instead (seqvault/server/contract.py): the columns of one write have equal lengths,
and a per-user `before` list has one value per id. A generated body that breaks one of them
is *not* valid, and the server's 422 saying so is correct; this hook drops exactly those
"schema-valid request rejected" reports, recognised by the problem the server answered.
Also dropped: bodies whose integers the generator pushed past int64 through float rounding
(e.g. 9223372036854775999 for a maximum of 2^63-1), which are invalid data, rightly refused.
Every other failure of every check stands.
"""

from __future__ import annotations

import json
from typing import Any

import schemathesis

CROSS_FIELD = ("all columns of one call must have the same length", "values but",
               "give one value or one per user")
INT64 = (-(1 << 63), (1 << 63) - 1)


def _out_of_int64(problem: dict[str, Any]) -> bool:
    values = [e.get("value") for e in problem.get("errors", [])] + [problem.get("value")]
    return any(isinstance(v, int | float) and not INT64[0] <= v <= INT64[1] for v in values)


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    if type(failure).__name__ != "RejectedPositiveData" or response.status_code != 422:
        return True
    try:
        problem = json.loads(response.content)
    except ValueError:
        return True
    detail = str(problem.get("detail", ""))
    if any(rule in detail for rule in CROSS_FIELD) or _out_of_int64(problem):
        return False
    return True
