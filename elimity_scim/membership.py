"""Who is in which group, kept compactly while resources stream past.

Users are numbered as they are read and groups as they are first named, so that a
membership costs a few bytes instead of a pair of strings. References are resolved
once every resource has been read: by ``value``, and when that matches nothing by the
last path segment of ``$ref`` (RFC 7643 §4.2 and §2.3.7).
"""

from __future__ import annotations

import logging
from array import array
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from elimity_insights_client import Relationship

from elimity_scim.diagnostics import Warnings
from elimity_scim.mapping import DIRECT, GROUP, INDIRECT, USER, membership

logger = logging.getLogger(__name__)

_CANONICAL = frozenset({"value", "type", "$ref", "display"})
_KINDS = {"User": USER, "Group": GROUP, USER: USER, GROUP: GROUP}
_DANGLING = "member references that point at nothing the server listed, dropped"
_AMBIGUOUS = "member references without type matching both a user and a group id"


@dataclass
class _Group:
    users: array[int] = field(default_factory=lambda: array("I"))
    untyped_users: array[int] = field(default_factory=lambda: array("I"))
    groups: array[int] = field(default_factory=lambda: array("I"))
    unresolved: list[tuple[str, str | None, str | None]] = field(default_factory=list)


class UserIds(dict[str, int]):
    """The listed users' ids, each with its number; ``add`` numbers a new one.

    A dict, so that a listing de-duplicating with it (``in``, ``len``) runs at C
    speed. Numbers follow insertion order, so the ids in number order are the
    dict's keys in order: no second list of them is kept while reading.
    """

    def add(self, item: str) -> None:
        """Number a user not seen before."""
        if item not in self:
            self[item] = len(self)


class Memberships:
    """Collects memberships from any strategy and yields relationships."""

    def __init__(self, warnings: Warnings) -> None:
        self.warnings = warnings
        self.user_index = UserIds()
        self.group_ids: list[str] = []
        self.group_index: dict[str, int] = {}
        self.listed_groups: list[int] = []
        self._listed: set[int] = set()
        self._groups: dict[int, _Group] = {}
        self._user_side: list[array[int]] = [array("I"), array("I")]
        self._user_side_indirect: list[array[int]] = [array("I"), array("I")]
        self._declared_indirect: dict[int, set[int]] = {}
        self._resolved = False

    @property
    def users_seen(self) -> UserIds:
        """The user ids, for a listing to de-duplicate with and number users."""
        return self.user_index

    def user_id_list(self) -> list[str]:
        """Return the user ids in number order (a new list: 8 bytes a user)."""
        return list(self.user_index)

    def add_user(self, user_id: str) -> int:
        """Number a user that the server listed."""
        self.user_index.add(user_id)
        return self.user_index[user_id]

    def add_group(self, group_id: str) -> int:
        """Record a group that the server listed, in listing order."""
        index = self._group_key(group_id)
        if index not in self._listed:
            self._listed.add(index)
            self.listed_groups.append(index)
        return index

    def add_member(self, group_id: str, member: object) -> None:
        """Record one entry of a group's ``members`` attribute."""
        self.add_members(group_id, (member,))

    def add_members(self, group_id: str, members: Iterable[object]) -> None:
        """Record the entries of a group's ``members`` attribute."""
        group: _Group | None = None
        user_index = self.user_index
        for member in members:
            if not isinstance(member, dict):
                self.warnings.add("member entries that are not objects, skipped")
                continue
            fields = (
                member
                if member.keys() <= _CANONICAL
                else {str(key).lower(): value for key, value in member.items()}
            )
            raw = fields.get("value")
            value = raw if type(raw) is str and raw else _text(raw)
            ref = _text(fields.get("$ref"))
            raw = fields.get("type")
            kind = _KINDS.get(raw) if type(raw) is str else None
            if kind is None and raw is not None:
                kind = (_text(raw) or "").lower() or None
            if kind is None and ref is not None:
                # An explicit $ref to /Users/ or /Groups/ (RFC 7643 §4.2) settles
                # the kind even where user and group ids overlap.
                kind = _kind_of_ref(ref)
            if group is None:
                group = self._group(self._group_key(group_id))
            if value is None and ref is None:
                self.warnings.add("member entries without value or $ref, skipped")
                continue
            if kind == GROUP:
                self._add_group_member(group, value, ref)
                continue
            user = user_index.get(value) if value is not None else None
            if user is None:
                group.unresolved.append((value or "", kind, ref))
            elif kind == USER:
                group.users.append(user)
            else:
                group.untyped_users.append(user)

    def add_user_group(
        self, user_id: str, group_value: str, *, indirect: bool = False
    ) -> None:
        """Note a membership read from a user's ``groups`` attribute.

        Kept aside until ``use_user_groups`` says this is the strategy in use.
        """
        user = self.user_index.get(user_id)
        if user is None:
            return
        side = self._user_side_indirect if indirect else self._user_side
        side[0].append(user)
        side[1].append(self._group_key(group_value))

    @property
    def user_groups_seen(self) -> int:
        """Return how many memberships the users' ``groups`` attributes named."""
        return len(self._user_side[0])

    def use_user_groups(self) -> None:
        """Take the memberships from the users' ``groups`` attributes.

        Entries the server marks ``indirect`` are kept as indirect memberships: the
        nesting that explains them may be visible nowhere else.
        """
        users, groups = self._user_side
        for user, group in zip(users, groups, strict=True):
            self._group(group).users.append(user)
        users, groups = self._user_side_indirect
        for user, group in zip(users, groups, strict=True):
            self._declared_indirect.setdefault(user, set()).add(group)
        self._user_side = [array("I"), array("I")]
        self._user_side_indirect = [array("I"), array("I")]

    def reset_groups(self) -> None:
        """Forget the groups and group-side members read so far, to read again."""
        self.listed_groups = []
        self._listed = set()
        self._groups = {}

    def has_members(self, group_id: str) -> bool:
        """Tell whether any member entry was recorded for a group."""
        group = self._groups.get(self.group_index.get(group_id, -1))
        if group is None:
            return False
        parts = (group.users, group.untyped_users, group.groups, group.unresolved)
        return any(len(part) for part in parts)

    def relationships(self, *, effective: bool) -> Iterator[Relationship]:
        """Yield user→group (direct, then indirect) and group→group relationships."""
        self._resolve()
        user_groups = self._user_groups()
        ancestors = self._ancestors() if effective else {}
        # The ids in number order are the index's keys: no list of them is built.
        for user_id, (user, direct) in zip(self.user_index, user_groups, strict=True):
            declared = self._declared_indirect.get(user)
            if not direct and not declared:
                continue
            for group in direct:
                yield membership(user_id, USER, self.group_ids[group], DIRECT)
            indirect = _indirect(direct, ancestors)
            if declared:
                listed = {group for group in declared if group in self._listed}
                indirect = sorted(listed.union(indirect).difference(direct))
            for group in indirect:
                yield membership(user_id, USER, self.group_ids[group], INDIRECT)
        for parent in self.listed_groups:
            members = self._groups.get(parent)
            for child in sorted(set(members.groups)) if members else ():
                yield membership(
                    self.group_ids[child], GROUP, self.group_ids[parent], None
                )

    def member_count(self, group_id: str) -> int:
        """Return the number of distinct direct members of a listed group."""
        self._resolve()
        members = self._groups.get(self.group_index[group_id])
        if members is None:
            return 0
        return len(set(members.users)) + len(set(members.groups))

    def _group_key(self, group_id: str) -> int:
        index = self.group_index.get(group_id)
        if index is None:
            index = self.group_index[group_id] = len(self.group_ids)
            self.group_ids.append(group_id)
        return index

    def _group(self, index: int) -> _Group:
        group = self._groups.get(index)
        if group is None:
            group = self._groups[index] = _Group()
        return group

    def _add_group_member(
        self, group: _Group, value: str | None, ref: str | None
    ) -> None:
        if value is not None and value in self.group_index:
            group.groups.append(self.group_index[value])
        else:
            group.unresolved.append((value or "", GROUP, ref))

    def _resolve(self) -> None:
        # Runs once, after every resource has been read: only then is it known
        # which ids are groups, and which references point at nothing.
        if self._resolved:
            return
        self._resolved = True
        dangling: list[str] = []
        # user number -> id, for the users whose id is also a listed group's
        ambiguous = {
            self.user_index[self.group_ids[g]]: self.group_ids[g]
            for g in self.listed_groups
            if self.group_ids[g] in self.user_index
        }
        for index in list(self._groups):
            group = self._groups[index]
            if index not in self._listed:
                dangling.append(self.group_ids[index])
                del self._groups[index]
                continue
            self._resolve_untyped(group, ambiguous)
            for value, kind, ref in group.unresolved:
                if not self._resolve_reference(group, value, kind, ref):
                    dangling.append(value or ref or "?")
            group.unresolved.clear()
            group.groups = array("I", (g for g in group.groups if g in self._listed))
        for reference in dangling:
            self.warnings.add(_DANGLING, reference)

    def _resolve_untyped(self, group: _Group, ambiguous: Mapping[int, str]) -> None:
        for user in group.untyped_users:
            shared_id = ambiguous.get(user)
            if shared_id is not None:
                # The rule: an untyped value that is a known group id is a
                # group, even when a user has the same id.
                self.warnings.add(_AMBIGUOUS, shared_id)
                group.groups.append(self.group_index[shared_id])
            else:
                group.users.append(user)
        group.untyped_users = array("I")

    def _resolve_reference(
        self, group: _Group, value: str, kind: str | None, ref: str | None
    ) -> bool:
        candidates = [value] if value else []
        if ref:
            candidates.append(_last_segment(ref))
        for candidate in candidates:
            found = self.group_index.get(candidate)
            if kind != USER and found is not None and found in self._listed:
                group.groups.append(found)
                return True
            user = self.user_index.get(candidate)
            if kind != GROUP and user is not None:
                group.users.append(user)
                return True
        return False

    def _user_groups(self) -> Iterator[tuple[int, list[int]]]:
        # Inverts group → users into user → groups in two flat arrays (where each
        # user's groups end, and group numbers) rather than a list per user: a few
        # bytes per membership. The ends array first counts, then serves as the
        # fill position, and ends up holding each user's end.
        users = len(self.user_index)
        groups = [self._groups.get(index) for index in self.listed_groups]
        total = sum(len(group.users) for group in groups if group)
        code = "I" if total < 2**32 else "Q"
        ends = array(code, bytes(array(code).itemsize * (users + 1)))
        for group in groups:
            for user in group.users if group else ():
                ends[user + 1] += 1
        for user in range(users):
            ends[user + 1] += ends[user]
        flat = array("I", bytes(4 * total))
        for index, group in zip(self.listed_groups, groups, strict=True):
            for user in group.users if group else ():
                flat[ends[user]] = index
                ends[user] += 1
        # ends[user] is now where the user's groups end; ends[user - 1] where they
        # start (each user's count moved ends[user] from the one to the other).
        start = 0
        for user in range(users):
            end = ends[user]
            if end - start > 1:
                yield user, sorted(set(flat[start:end]))
            else:
                yield user, list(flat[start:end])
            start = end

    def _ancestors(self) -> dict[int, frozenset[int]]:
        parents: dict[int, list[int]] = {}
        for parent in self.listed_groups:
            group = self._groups.get(parent)
            for child in group.groups if group else ():
                parents.setdefault(child, []).append(parent)
        ancestors: dict[int, frozenset[int]] = {}
        for start in parents:
            seen: set[int] = set()
            stack = list(parents[start])
            while stack:  # iterative, so that cycles and depth cannot hurt
                node = stack.pop()
                if node not in seen:
                    seen.add(node)
                    stack.extend(parents.get(node, ()))
            ancestors[start] = frozenset(seen)
        return ancestors


def _indirect(direct: list[int], ancestors: Mapping[int, frozenset[int]]) -> list[int]:
    if not ancestors:
        return []
    found: set[int] = set()
    for group in direct:
        found |= ancestors.get(group, frozenset())
    return sorted(found.difference(direct))


def _text(value: object) -> str | None:
    if isinstance(value, str):
        return value or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _kind_of_ref(ref: str) -> str | None:
    path = urlsplit(ref).path.lower()
    if "/groups/" in path:
        return GROUP
    return USER if "/users/" in path else None


def _last_segment(ref: str) -> str:
    return urlsplit(ref).path.rstrip("/").rpartition("/")[2]
