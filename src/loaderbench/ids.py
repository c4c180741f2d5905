"""The id codec shared by ``LoaderConfig.id`` and ``CudaSpec.id``: readable tokens joined by ``-``.

A :class:`Token` maps one token form to one field: an exact word (``pin`` ->
``pin_memory=True``) or a prefix and suffix around a value (``w2`` ->
``num_workers=2``, ``step5ms`` -> ``step_ms=5.0``).  :func:`encode` writes the
tokens of the fields that differ from their defaults, in the codec's order;
:func:`decode` reads them back, and every malformed token is an
:class:`~loaderbench.errors.InvalidConfig` naming ``NAME=TEXT``, the token, and
the forms it could take.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from loaderbench.errors import InvalidConfig


@dataclass(frozen=True, slots=True)
class Token:
    """One token form: ``word`` alone means ``field=value``; otherwise ``prefix VALUE suffix``,
    where ``parse`` turns VALUE into the field's value (a ``ValueError`` means "not this form")."""

    field: str
    word: str = ""
    value: Any = None
    prefix: str = ""
    suffix: str = ""
    parse: Callable[[str], Any] | None = None
    example: str = ""

    def read(self, token: str) -> tuple[bool, Any]:
        """(matched, value) for ``token``."""
        if self.word:
            return token == self.word, self.value
        if self.parse is None or not (token.startswith(self.prefix) and token.endswith(self.suffix)):
            return False, None
        body = token[len(self.prefix) : len(token) - len(self.suffix)]
        if not body:
            return False, None
        try:
            return True, self.parse(body)
        except ValueError:
            return False, None


def decode(text: str, tokens: Sequence[Token], *, name: str) -> dict[str, Any]:
    """The fields that ``text`` names; raises :class:`InvalidConfig` for a token no form reads."""
    out: dict[str, Any] = {}
    parts = text.strip().split("-")
    for i, token in enumerate(parts):
        for form in tokens:
            matched, value = form.read(token)
            if matched:
                out[form.field] = value
                break
        else:
            _bare_prefix(text, token, parts[i + 1] if i + 1 < len(parts) else None, tokens, name=name)
            examples = ", ".join(dict.fromkeys(f.example or f.word for f in tokens if f.example or f.word))
            raise InvalidConfig(f"{name}={text!r}: unknown token {token!r}. Use tokens like {examples}, joined by '-'.")
    return out


def _bare_prefix(text: str, token: str, following: str | None, tokens: Sequence[Token], *, name: str) -> None:
    """Raise a precise error for a value-taking token written without its value (``w``), or with a negative one
    (``w-1``, which the ``-`` separator splits into ``w`` and ``1``)."""
    for form in tokens:
        if form.parse is None or not form.prefix or token != form.prefix + form.suffix:
            continue
        if following is not None and following.replace(".", "", 1).isdigit():
            raise InvalidConfig(
                f"{name}={text!r}: {token}-{following} asks for {form.field}=-{following}; {form.field} cannot be "
                f"negative. Write e.g. {form.example or form.prefix + '2'}."
            )
        raise InvalidConfig(
            f"{name}={text!r}: {token!r} has no value; {form.field} needs one. Write e.g. "
            f"{form.example or form.prefix + '2'}."
        )


def encode(parts: Sequence[str | None]) -> str:
    """The id: the given tokens (``None`` for a field at its default) joined by ``-``."""
    return "-".join(p for p in parts if p)


def digits(text: str) -> int:
    """A non-negative integer written in digits only (``int`` also takes ``+1`` and `` 1``)."""
    if not text.isdigit():
        raise ValueError(text)
    return int(text)


def choices(field: str, words: Mapping[str, Any]) -> list[Token]:
    """One exact-word token per ``word -> value``."""
    return [Token(field, word=w, value=v) for w, v in words.items()]
