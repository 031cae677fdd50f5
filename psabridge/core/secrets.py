"""Secret settings at rest: sealed with a key kept outside the store, or referenced.

A connector declares which of its settings are secret (`Setting(..., secret=True)`). The store
never holds such a value in plaintext; it holds one of:

- a *sealed* value, `fernet:<key id>:<token>`: the secret encrypted and authenticated with
  Fernet (AES-128-CBC and HMAC-SHA256) under this installation's key;
- a *reference*, `env:NAME` or `file:/absolute/path`: where to read the secret when a connection
  is built. The reference is stored; what it points to never is.

The key is `PSABRIDGE_SECRET_KEY` when set (containers, or a store moved to another machine),
else the key file in the user's config directory, created on first need, readable by its
owner only. A copy of the store is useless without the key, and the key is useless without the
store: back them up apart.

Every seal and unseal happens here, called by the settings path of `psabridge.core.plugins`,
so whatever engine keeps the store only ever sees sealed values.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import platformdirs

from psabridge.core import logs
from psabridge.core.errors import PsabridgeError

if TYPE_CHECKING:  # cryptography is imported where a secret is sealed or opened
    from cryptography.fernet import Fernet

ENV_SECRET_KEY = "PSABRIDGE_SECRET_KEY"
SEALED = "fernet:"
ENV_REFERENCE = "env:"
FILE_REFERENCE = "file:"
MAKE_A_KEY = "openssl rand -base64 32 | tr '+/' '-_'"


class SecretsError(PsabridgeError):
    """A secret setting cannot be sealed, unsealed or read from where it is referenced."""


def key_file_path() -> Path:
    return Path(platformdirs.user_config_dir("psabridge")) / "secret.key"


@attrs.frozen
class SecretKey:
    """The key secrets are sealed with, and where it came from (said in error messages)."""

    fernet: Fernet = attrs.field(repr=False)
    id: str  # a short fingerprint, stored with each sealed value: which key sealed it
    where: str

    @classmethod
    def parse(cls, text: str, where: str) -> SecretKey:
        from cryptography.fernet import Fernet

        text = text.strip()
        try:
            fernet = Fernet(text)
        except ValueError:
            raise SecretsError(
                f"{where} does not hold a valid key: a key is 32 random bytes in URL-safe base64 "
                f"(44 characters); make one with `{MAKE_A_KEY}`"
            ) from None
        return cls(fernet, hashlib.sha256(text.encode()).hexdigest()[:8], where)


def secret_key(create: bool = False) -> SecretKey | None:
    """This installation's key: `PSABRIDGE_SECRET_KEY`, else the key file.

    With `create`, a missing key file is made (sealing needs a key; a new key could not
    unseal anything, so reading never makes one). None when there is no key and none was made.
    """
    if (text := os.environ.get(ENV_SECRET_KEY)) is not None:
        return SecretKey.parse(text, ENV_SECRET_KEY)
    path = key_file_path()
    try:
        return _read_key_file(path)
    except FileNotFoundError:
        if not create:
            return None
    _create_key_file(path)
    return _read_key_file(path)


def _read_key_file(path: Path) -> SecretKey:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise SecretsError(
            f"the key file {path} is open to other users (mode {mode:04o}), and it unlocks the "
            f"connectors' secrets: make it private with `chmod 600 {path}` and try again"
        )
    try:
        text = path.read_text()
    except OSError as exc:
        raise SecretsError(f"cannot read the key file {path}: {exc.strerror}") from exc
    return SecretKey.parse(text, f"the key file {path}")


def _create_key_file(path: Path) -> None:
    """Write a new key file, private from its first byte, all at once.

    The key is written to a temporary file that is then linked into place: two processes that
    both find no key cannot each make their own, and none ever reads a half-written one."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".secret.key-")  # mode 0600
        try:
            from cryptography.fernet import Fernet

            with os.fdopen(fd, "w") as file:
                file.write(Fernet.generate_key().decode() + "\n")
                file.flush()
                os.fsync(file.fileno())
            try:
                os.link(temporary, path)
            except FileExistsError:
                pass  # another process made the key first: use that one
        finally:
            os.unlink(temporary)
    except OSError as exc:
        raise SecretsError(
            f"cannot create the key file {path} to encrypt secrets with: {exc.strerror.lower()}; "
            f"make its folder writable, or set {ENV_SECRET_KEY} to a key (`{MAKE_A_KEY}`)"
        ) from exc


# -- one value ---------------------------------------------------------------------------------


def is_sealed(value: str | None) -> bool:
    return bool(value) and value.startswith(SEALED)


def is_reference(value: str | None) -> bool:
    return bool(value) and value.startswith((ENV_REFERENCE, FILE_REFERENCE))


def needs_sealing(value: str | None) -> bool:
    """Whether a secret setting's value is the secret itself, in plaintext."""
    return bool(value) and not is_sealed(value) and not is_reference(value)


def reference_problem(value: str) -> str | None:
    """What is wrong with an `env:`/`file:` reference as written, or None."""
    if value.startswith(ENV_REFERENCE):
        name = value[len(ENV_REFERENCE):]
        if not name.isidentifier():
            return f"{value!r} must name an environment variable, as in env:CW_PRIVATE_KEY"
    elif value.startswith(FILE_REFERENCE):
        # The service that reads it runs in another folder than the admin who configured it.
        if not Path(value[len(FILE_REFERENCE):]).is_absolute():
            return f"{value!r} must give an absolute path, as in file:/etc/psabridge/cw.key"
    return None


def seal(value: str) -> str:
    key = secret_key(create=True)
    return f"{SEALED}{key.id}:{key.fernet.encrypt(value.encode()).decode()}"


def _key_id_and_token(sealed: str) -> tuple[str, str]:
    key_id, _, token = sealed[len(SEALED):].partition(":")
    return key_id, token


def can_unseal(value: str) -> bool:
    """Whether this installation's key opens a sealed value."""
    key_id, token = _key_id_and_token(value)
    key = secret_key()
    if key is None or key.id != key_id:
        return False
    from cryptography.fernet import InvalidToken

    try:
        key.fernet.decrypt(token.encode())
    except InvalidToken:
        return False
    return True


def unseal(value: str, plugin: str, setting: str) -> str:
    """The secret in a sealed value; a clear error naming the plugin's setting if it cannot."""
    key_id, token = _key_id_and_token(value)
    key = secret_key()
    what = f"the {setting} of {plugin} in the store"
    again = f"or set it again with `psabridge configure {plugin}`"
    if key is None:
        raise SecretsError(
            f"{what} is encrypted (key {key_id}), but there is no key here: neither "
            f"{ENV_SECRET_KEY} nor the key file {key_file_path()}; set {ENV_SECRET_KEY} to the "
            f"key it was encrypted with (the key file of the machine the store comes from), {again}"
        )
    if key.id != key_id:
        raise SecretsError(
            f"{what} was encrypted with another key (key {key_id}; {key.where} holds key "
            f"{key.id}); set {ENV_SECRET_KEY} to the key it was encrypted with (the key file of "
            f"the machine the store comes from), {again}"
        )
    from cryptography.fernet import InvalidToken

    try:
        return key.fernet.decrypt(token.encode()).decode()
    except InvalidToken:
        raise SecretsError(
            f"{what} is damaged: it does not decrypt with its key ({key.where}); {again}"
        ) from None


def resolve_reference(value: str, plugin: str, setting: str) -> str:
    """Read the secret an `env:`/`file:` reference points to, now."""
    if problem := reference_problem(value):
        raise SecretsError(f"the {setting} of {plugin}: {problem}")
    where = value.partition(":")[2]
    if value.startswith(ENV_REFERENCE):
        secret = os.environ.get(where, "").strip()
        if not secret:
            raise SecretsError(
                f"the {setting} of {plugin} is read from the environment variable {where}, which "
                "is not set (or empty) here: set it where psabridge runs (the service's "
                f"environment file), or configure the secret itself with `psabridge configure {plugin}`"
            )
        return secret
    try:
        secret = Path(where).read_text().strip()
    except OSError as exc:
        raise SecretsError(
            f"the {setting} of {plugin} is read from the file {where}, which cannot be read: "
            f"{exc.strerror}"
        ) from exc
    if not secret:
        raise SecretsError(f"the {setting} of {plugin} is read from the file {where}, which is empty")
    return secret


# -- a plugin's settings -------------------------------------------------------------------------


def seal_settings(settings: Mapping[str, str], secret_names: Iterable[str]) -> dict[str, str]:
    """The settings as the store keeps them: every plaintext secret sealed."""
    sealed = dict(settings)
    for name in secret_names:
        if needs_sealing(sealed.get(name)):
            sealed[name] = seal(sealed[name])
    return sealed


def open_settings(plugin: str, settings: Mapping[str, str],
                  secret_names: Iterable[str]) -> dict[str, str]:
    """The settings a connection is built with: secrets unsealed or read where they are
    referenced, and registered so that logs mask them."""
    opened = dict(settings)
    for name in secret_names:
        value = opened.get(name)
        if is_sealed(value):
            opened[name] = unseal(value, plugin, name)
        elif is_reference(value):
            opened[name] = resolve_reference(value, plugin, name)
        logs.register_secret(opened.get(name))
    return opened
