"""Where a deploy goes: a Hugging Face Space, a ModelScope studio or any git remote.

A target names its host's conventions (the README front matter it needs, whether large
and binary files must go through Git LFS) and how to authenticate without writing a token
anywhere: the token stays in the environment of the git processes, handed to git by a
credential helper given on the command line (`-c`), which reads it from that environment.
Nothing with a token goes into a URL, a config file, a log line or an error message.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from ..errors import GitError
from ..gitops.repo import redact

HF_HOST = "https://huggingface.co"
MS_HOST = "https://www.modelscope.cn"
# Environment variables a token is read from, first set wins.
HF_TOKEN_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
MS_TOKEN_VARS = ("MODELSCOPE_API_TOKEN",)

_NAME = r"[A-Za-z0-9][\w.-]*"
_SHORT = re.compile(rf"^(hf|ms):({_NAME})/({_NAME})$")
_HF_URL = re.compile(rf"^https://huggingface\.co/spaces/({_NAME})/({_NAME}?)(?:\.git)?/?$")
_MS_URL = re.compile(
    rf"^https://(?:www\.)?modelscope\.(?:cn|ai)/studios/({_NAME})/({_NAME}?)(?:\.git)?/?$")
# The helper answers `get` with the user and token of *its own* environment, and only
# for the host the remote's address leads to (after the user's URL rewrites): a redirect
# or an LFS endpoint elsewhere never gets the token. `store`/`erase` get nothing, and the
# user's helpers are off for these commands, so none of them ever saves it.
_HELPER = ('!f() { test "$1" = get || exit 0; ok=; '
           'while IFS= read -r line; do '
           'test "$line" = "host=$FLOWILLOWER_GIT_HOST" && ok=1; done; '
           'test -n "$ok" || exit 0; '
           'printf "username=%s\\npassword=%s\\n" "$FLOWILLOWER_GIT_USER" '
           '"$FLOWILLOWER_GIT_TOKEN"; }; f')


@dataclass(frozen=True)
class Target:
    """A deploy destination: its git `url`, its `kind` ("hf", "ms" or "git") and, for
    a hosted one, where a token may come from and which user name goes with it."""

    url: str
    kind: str = "git"
    owner: str = ""
    name: str = ""
    token_vars: tuple[str, ...] = field(default=())
    user: str = ""

    @property
    def hosted(self) -> bool:
        """A Space or a studio: a README front matter and Git LFS for binary files."""
        return self.kind in ("hf", "ms")

    @property
    def page(self) -> str:
        """Where people open the deployed site."""
        if self.kind == "hf":
            return f"{HF_HOST}/spaces/{self.owner}/{self.name}"
        if self.kind == "ms":
            return f"{MS_HOST}/studios/{self.owner}/{self.name}"
        return redact(self.url)

    def token(self) -> str | None:
        """The token from the first of `token_vars` that is set (None: the user's own
        git credential helpers answer, as for any remote)."""
        for var in self.token_vars:
            value = os.environ.get(var, "").strip()
            if value:
                return value
        return None

    def auth(self, host: str) -> tuple[list[str], dict[str, str]]:
        """(git `-c` options, environment) for a command talking to this target, whose
        address leads to `host` (`name[:port]`, after the user's URL rewrites).

        With a token: the user's credential helpers are switched off for the command
        (so none of them stores the token) and ours hands git the token from the
        environment, for `host` only. Without one: the user's own setup applies.
        """
        token = self.token()
        if token is None:
            return [], {}
        if "\n" in token or "\r" in token:
            raise GitError(f"the token in ${self.token_vars[0]} spans several lines; "
                           "set it to the token alone")
        return (["-c", "credential.helper=", "-c", f"credential.helper={_HELPER}"],
                {"FLOWILLOWER_GIT_USER": self.user, "FLOWILLOWER_GIT_TOKEN": token,
                 "FLOWILLOWER_GIT_HOST": host})


def hosted(owner: str, name: str, kind: str) -> Target:
    """The target of Space / studio `owner/name` on `kind` ("hf" or "ms")."""
    if kind == "hf":
        # The Hub takes any user name with a token as the password.
        return Target(f"{HF_HOST}/spaces/{owner}/{name}", "hf", owner, name,
                      HF_TOKEN_VARS, "user")
    # ModelScope's git server wants the user name "oauth2" with an access token.
    return Target(f"{MS_HOST}/studios/{owner}/{name}.git", "ms", owner, name,
                  MS_TOKEN_VARS, "oauth2")


def parse_target(text: str) -> Target:
    """`hf:USER/SPACE`, `ms:USER/STUDIO`, a Space's or studio's https address, or any
    other git URL / path (used as is)."""
    text = text.strip()
    short = _SHORT.match(text)
    if short:
        return hosted(short.group(2), short.group(3), short.group(1))
    if text.startswith(("hf:", "ms:")):
        raise GitError(f"{text!r}: write a Space as hf:USER/SPACE, a ModelScope studio as "
                       "ms:USER/STUDIO")
    for pattern, kind in ((_HF_URL, "hf"), (_MS_URL, "ms")):
        match = pattern.match(text)
        if match:
            return hosted(match.group(1), match.group(2), kind)
    if re.match(r"^\w[\w+.-]*://[^/@\s]+@", text) and (
            "huggingface.co/spaces/" in text or "modelscope." in text):
        raise GitError(f"{redact(text)}: leave the token out of the address; set "
                       f"${HF_TOKEN_VARS[0]} or ${MS_TOKEN_VARS[0]} instead (it is then "
                       "never written anywhere)")
    return Target(text)


def is_hosted(text: str) -> bool:
    """Whether `text` names a Space or a studio (which `push` deploys the viewer to)."""
    try:
        return parse_target(text).hosted
    except GitError:
        return text.strip().startswith(("hf:", "ms:"))


def readme(title: str, kind: str = "git") -> str:
    """The site's README.md: front matter for a Space (``sdk: static``) or a ModelScope
    studio (``deployspec.entry_file``), a short body for any remote."""
    safe = re.sub(r"[^\w .,()+-]", " ", title).strip() or "flowillower runs"
    body = (f"# {safe}\n\nExperiment runs exported by flowillower "
            "(`flowillower export` / `flowillower deploy`). Open index.html.\n\n"
            "Teammates get the runs themselves with "
            "`flowillower pull <this repository's git URL>`.\n")
    if kind == "hf":
        head = ("---\n"
                f"title: {safe}\n"
                "emoji: 📈\n"
                "colorFrom: blue\n"
                "colorTo: indigo\n"
                "sdk: static\n"
                "app_file: index.html\n"
                "pinned: false\n"
                "---\n\n")
    elif kind == "ms":
        # A studio's SDK ("static") is chosen when it is created; the card says which
        # file the static server starts from.
        head = ("---\n"
                "tags:\n"
                "- flowillower\n"
                "- experiment-tracking\n"
                "deployspec:\n"
                "  entry_file: index.html\n"
                "---\n\n")
    else:
        head = ""
    return head + body
