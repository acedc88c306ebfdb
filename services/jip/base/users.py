"""Local users of the embedded shape: create, change password, list, remove, verify.

Passwords are hashed with scrypt (stdlib ``hashlib``) and a random salt per user; the
cost parameters travel inside the hash string, so raising them later rehashes each
password at its owner's next login. Usernames are case-insensitive (stored lower-case),
as in Keycloak.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from pydantic import SecretStr
from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from jip.base.ledger import bump_token_version
from jip.base.schema import (
    Membership,
    Project,
    ProjectRole,
    RefreshToken,
    User,
    as_utc,
    now_utc,
)
from jip.errors import Conflict, Invalid, NotFound, Unauthorized

USERNAME_RE = re.compile(r"[a-z0-9][a-z0-9._@-]{0,63}")
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024
BOOTSTRAP_ADMIN = "admin"


@dataclass(frozen=True)
class ScryptCost:
    """scrypt parameters (RFC 7914); n=2^15, r=8 needs 32 MiB and ~0.15 s a hash."""

    n: int = 2**15
    r: int = 8
    p: int = 1

    @property
    def maxmem(self) -> int:
        return 2 * 128 * self.r * self.n * self.p + 1024**2


DEFAULT_COST = ScryptCost()


def hash_password(password: str, cost: ScryptCost | None = None) -> str:
    cost = cost or DEFAULT_COST
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, cost)
    return "$".join(["scrypt", str(cost.n), str(cost.r), str(cost.p), _b64(salt), _b64(digest)])


def check_password(password: str, encoded: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = encoded.split("$")
        cost = ScryptCost(int(n), int(r), int(p))
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    return hmac.compare_digest(_scrypt(password, _unb64(salt), cost), _unb64(digest))


def needs_rehash(encoded: str, cost: ScryptCost | None = None) -> bool:
    cost = cost or DEFAULT_COST
    return not encoded.startswith(f"scrypt${cost.n}${cost.r}${cost.p}$")


def generate_password() -> str:
    """A one-time password for a new account, to be shown once and then changed."""
    return secrets.token_urlsafe(12)


def _scrypt(password: str, salt: bytes, cost: ScryptCost) -> bytes:
    return hashlib.scrypt(
        password.encode(), salt=salt, n=cost.n, r=cost.r, p=cost.p, maxmem=cost.maxmem, dklen=32
    )


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@functools.cache
def _dummy_hash() -> str:
    """Verifying an unknown username costs as much as a wrong password, so response
    times do not tell which usernames exist."""
    return hash_password(secrets.token_urlsafe(16))


def normalise_username(username: str) -> str:
    name = username.strip().lower()
    if not USERNAME_RE.fullmatch(name):
        raise Invalid(
            f"username {username!r} is invalid: use 1-64 letters, digits, '.', '_', '@' or '-',"
            " starting with a letter or digit"
        )
    return name


def check_password_policy(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise Invalid(f"password is too short: use at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise Invalid(f"password is too long: use at most {MAX_PASSWORD_LENGTH} characters")


@dataclass(frozen=True)
class UserInfo:
    username: str
    is_admin: bool
    disabled: bool
    created_at: datetime
    projects: dict[str, ProjectRole]
    token_version: int = 0


class Users:
    """User accounts over one engine (SQLite or PostgreSQL)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(self, username: str, password: str, *, is_admin: bool = False) -> UserInfo:
        name = normalise_username(username)
        check_password_policy(password)
        password_hash = hash_password(password)
        with Session(self.engine) as session, session.begin():
            if _find(session, name) is not None:
                raise Conflict(f"user {name!r} already exists")
            user = User(
                username=name,
                password_hash=password_hash,
                is_admin=is_admin,
                disabled=False,
                created_at=now_utc(),
                # A random start: a new user of a removed user's name never matches the
                # version in the removed user's tokens.
                token_version=secrets.randbits(31),
            )
            session.add(user)
            session.flush()
            return user_info(session, user)

    def get(self, username: str) -> UserInfo:
        with Session(self.engine) as session:
            return user_info(session, _get(session, username))

    def list(self) -> list[UserInfo]:
        with Session(self.engine) as session:
            users = session.scalars(select(User).order_by(User.username)).all()
            roles = _roles_by_user(session)
            return [user_info(session, user, roles.get(user.id, {})) for user in users]

    def count(self) -> int:
        with Session(self.engine) as session:
            return int(session.scalar(select(func.count()).select_from(User)) or 0)

    def set_password(self, username: str, password: str) -> None:
        """Change the password and end every session and access token of the user."""
        check_password_policy(password)
        password_hash = hash_password(password)
        with Session(self.engine) as session, session.begin():
            user = _get(session, username)
            user.password_hash = password_hash
            revoke_sessions(session, user.id)
            bump_token_version(session, user.id)

    def update(
        self, username: str, *, is_admin: bool | None = None, disabled: bool | None = None
    ) -> UserInfo:
        with Session(self.engine) as session, session.begin():
            user = _get(session, username)
            losing_admin = (
                user.is_admin and not user.disabled and (is_admin is False or disabled is True)
            )
            if losing_admin:
                _keep_an_admin(session, user)
            # Losing admin or being disabled ends the user's access tokens at once.
            revoke = (is_admin is False and user.is_admin) or (disabled and not user.disabled)
            if is_admin is not None:
                user.is_admin = is_admin
            if disabled is not None:
                user.disabled = disabled
                if disabled:
                    revoke_sessions(session, user.id)
            session.flush()
            if revoke:
                bump_token_version(session, user.id)
                session.refresh(user)
            return user_info(session, user)

    def remove(self, username: str) -> None:
        with Session(self.engine) as session, session.begin():
            user = _get(session, username)
            if user.is_admin and not user.disabled:
                _keep_an_admin(session, user)
            session.delete(user)

    def verify(self, username: str, password: str) -> UserInfo:
        """The user, if the password is right and the account enabled; else Unauthorized.

        The message is the same for unknown users, wrong passwords and disabled accounts.
        """
        refused = Unauthorized("invalid username or password")
        try:
            name = normalise_username(username)
        except Invalid:
            check_password(password, _dummy_hash())
            raise refused from None
        with Session(self.engine) as session, session.begin():
            user = _find(session, name)
            if user is None:
                check_password(password, _dummy_hash())
                raise refused
            if not check_password(password, user.password_hash) or user.disabled:
                raise refused
            if needs_rehash(user.password_hash):
                user.password_hash = hash_password(password)
            return user_info(session, user)

    def bootstrap_admin(self, password: SecretStr | None) -> str | None:
        """On first run (no user at all) create ``admin``.

        With ``password`` (``auth.admin_password``) that is the admin's password and
        None is returned; without, a one-time password is generated and returned for the
        caller to show once. Does nothing and returns None once any user exists.
        """
        if self.count() > 0:
            return None
        generated = None if password is not None else generate_password()
        chosen = password.get_secret_value() if password is not None else generated
        assert chosen is not None
        try:
            self.create(BOOTSTRAP_ADMIN, chosen, is_admin=True)
        except Conflict:  # another process bootstrapped first
            return None
        return generated


def revoke_sessions(session: Session, user_id: int) -> None:
    """Revoke every refresh token of the user (their access tokens expire on their own)."""
    session.execute(
        update(RefreshToken)
        .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now_utc())
    )


def _find(session: Session, username: str) -> User | None:
    return session.scalar(select(User).where(User.username == username))


def _get(session: Session, username: str) -> User:
    name = username.strip().lower()
    user = _find(session, name)
    if user is None:
        raise NotFound(f"no user {name!r}")
    return user


def _keep_an_admin(session: Session, leaving: User) -> None:
    others = session.scalar(
        select(func.count())
        .select_from(User)
        .where(User.is_admin.is_(True), User.disabled.is_(False), User.id != leaving.id)
    )
    if not others:
        raise Conflict(
            f"{leaving.username!r} is the last enabled admin: make another user admin first"
        )


def _roles_by_user(session: Session) -> dict[int, dict[str, ProjectRole]]:
    rows = session.execute(
        select(Membership.user_id, Project.name, Membership.role).join(
            Project, Project.id == Membership.project_id
        )
    )
    roles: dict[int, dict[str, ProjectRole]] = {}
    for user_id, project, role in rows:
        roles.setdefault(user_id, {})[project] = ProjectRole(role)
    return roles


def user_info(
    session: Session, user: User, roles: dict[str, ProjectRole] | None = None
) -> UserInfo:
    if roles is None:
        rows = session.execute(
            select(Project.name, Membership.role)
            .join(Project, Project.id == Membership.project_id)
            .where(Membership.user_id == user.id)
        )
        roles = {name: ProjectRole(role) for name, role in rows}
    return UserInfo(
        username=user.username,
        is_admin=user.is_admin,
        disabled=user.disabled,
        created_at=as_utc(user.created_at),
        projects=dict(sorted(roles.items())),
        token_version=user.token_version or 0,
    )
