"""Which XenAPI messages this agent answers, class by class, derived from the datamodel and the
api tables (never a hand-kept list). Any other name answers MESSAGE_METHOD_UNKNOWN.

    python -m httpd.catalog          # the README's "Messages" section (a test keeps them equal)
"""

from __future__ import annotations

from .api import all_tables
from .core.implicit import implicit_table
from .model.datamodel import CLASSES

__all__ = ["explicit_by_class", "render"]

_IMPLICIT = ("get_all", "get_all_records", "get_all_records_where", "get_record", "get_by_uuid",
             "get_by_name_label", "create", "destroy")


def explicit_by_class(implicit: set[str] | None = None) -> dict[str, list[str]]:
    """Class -> the messages written in `httpd/api/` (sorted), for every class and family."""
    implicit = implicit if implicit is not None else {m.name for m in implicit_table().messages}
    out: dict[str, set[str]] = {}
    for table in all_tables():
        for m in table.messages:
            cls, _, name = m.name.partition(".")
            out.setdefault(cls, set()).add(name)    # overriding an implicit one included
    return {cls: sorted(names) for cls, names in sorted(out.items(), key=lambda kv: kv[0].lower())}


def render() -> str:
    implicit = {m.name for m in implicit_table().messages}
    lines = ["| class | messages written for it (besides each field's `get_`/`set_`/`add_to_`/"
             "`remove_from_` and the class's implicit ones) |", "|---|---|"]
    explicit = explicit_by_class(implicit)
    for cls in sorted(set(CLASSES) | set(explicit), key=str.lower):
        own_names = explicit.get(cls, [])
        derived = ", ".join(f"`{n}`" for n in _IMPLICIT
                            if f"{cls}.{n}" in implicit and n not in own_names)
        own = ", ".join(f"`{n}`" for n in own_names)
        lines.append(f"| {cls} | {own or '-'}{' (implicit: ' + derived + ')' if derived else ''} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
