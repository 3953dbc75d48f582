"""Users and path resolution of the in-sandbox agent, as envd's ExpandAndResolve."""

from __future__ import annotations

import base64

import pytest

from wakeproxy.platform.agent import paths
from wakeproxy.platform.agent.errors import PathError, UnknownUser

HOME = "/home/user"
USERS = paths.Users(HOME)
USER = USERS.default


def basic(credentials: str) -> str:
    return "Basic " + base64.b64encode(credentials.encode()).decode()


@pytest.mark.parametrize(
    ("path", "resolved"),
    [
        ("", HOME),
        ("file.txt", f"{HOME}/file.txt"),
        ("a/b/../c", f"{HOME}/a/c"),
        ("./x", f"{HOME}/x"),
        ("../other", "/home/other"),
        ("~", HOME),
        ("~/", HOME),
        ("~/docs/x", f"{HOME}/docs/x"),
        ("/etc/hosts", "/etc/hosts"),
        ("/tmp/../etc", "/tmp/../etc"),  # absolute paths are taken as given
    ],
)
def test_paths_resolve_against_the_users_home(path: str, resolved: str) -> None:
    assert paths.resolve(path, USER) == resolved


def test_an_empty_path_means_the_working_directory_when_there_is_one() -> None:
    assert paths.resolve("", USER, workdir="/srv") == "/srv"
    assert paths.resolve("x", USER, workdir="/srv") == f"{HOME}/x"


@pytest.mark.parametrize("path", ["~root/x", "~other", "a\x00b"])
def test_unresolvable_paths_are_path_errors(path: str) -> None:
    with pytest.raises(PathError):
        paths.resolve(path, USER)


def test_user_and_root_exist_and_share_the_sandbox_home() -> None:
    assert USERS.lookup(None) == paths.User("user", HOME)
    assert USERS.lookup("root") == paths.User("root", HOME)
    with pytest.raises(UnknownUser):
        USERS.lookup("mallory")


def test_the_user_comes_from_basic_credentials_with_an_empty_password() -> None:
    assert USERS.from_basic_auth(basic("root:")).name == "root"
    assert USERS.from_basic_auth(None).name == "user"
    with pytest.raises(UnknownUser):
        USERS.from_basic_auth(basic("nobody:"))


@pytest.mark.parametrize(
    "header", ["Bearer abc", "Basic", "Basic !!!", basic("no-colon"), "Digest x"]
)
def test_malformed_credentials_count_as_none(header: str) -> None:
    assert paths.basic_auth_user(header) is None


def test_the_scheme_is_case_insensitive() -> None:
    assert paths.basic_auth_user("basic " + basic("user:")[6:]) == "user"


def test_the_default_user_must_exist() -> None:
    with pytest.raises(ValueError, match="default user"):
        paths.Users(HOME, names=("root",))
