"""What a diagnose run will do, decided in the library: targets, skipped Challenges, cluster."""

from __future__ import annotations

import pytest

from acmelb.doctor.diagnose import names_from_text, plan, targets_from_names
from acmelb.doctor.vantage import ProbeSettings
from acmelb.errors import UsageError
from acmelb.kube import plan as kube
from acmelb.kube.challenges import Challenge
from acmelb.kube.plan import targets_from_challenges
from tests.diagnose.servers import KEYAUTH, KEYAUTH_TOKEN


def challenge(name: str, kind: str = "HTTP-01", state: str = "pending") -> Challenge:
    return Challenge(
        "shop",
        f"{name}-1",
        name,
        kind,
        KEYAUTH_TOKEN,
        KEYAUTH,
        state,
        "Waiting for HTTP-01 challenge propagation: wrong status code '404'",
    )


def test_names_from_text_skips_blanks_and_comments() -> None:
    assert names_from_text("a.example\n\n  # no\n b.example \n") == ["a.example", "b.example"]


def test_targets_from_names_share_token_and_key() -> None:
    targets = targets_from_names(["a.example", "b.example"], KEYAUTH_TOKEN, KEYAUTH)
    assert [(t.name, t.token, t.key_authorization) for t in targets] == [
        ("a.example", KEYAUTH_TOKEN, KEYAUTH),
        ("b.example", KEYAUTH_TOKEN, KEYAUTH),
    ]
    random = targets_from_names(["a.example"])[0]
    assert random.random_token and random.key_authorization is None


@pytest.mark.parametrize(
    ("names", "token", "key", "message"),
    [
        ([], None, None, "give a NAME, --from-file or --challenges"),
        (["a.example"], None, KEYAUTH, "--key needs --token"),
        (["a.example"], "other", KEYAUTH, "--key must be TOKEN.THUMBPRINT for the --token given"),
    ],
)
def test_targets_from_names_reject(
    names: list[str], token: str | None, key: str | None, message: str
) -> None:
    with pytest.raises(UsageError, match=f"^{message}$"):
        targets_from_names(names, token, key)


def test_challenges_pending_http01_only_and_filtered_by_name() -> None:
    challenges = [
        challenge("www.example.com"),
        challenge("api.example.com"),
        challenge("wild.example.com", kind="DNS-01"),
        challenge("old.example.com", state="valid"),
    ]
    targets, infos = targets_from_challenges(challenges)
    assert [t.name for t in targets] == ["www.example.com", "api.example.com"]
    assert targets[0].challenge == "shop/www.example.com-1" and targets[0].reason
    assert infos == [
        "skipping shop/wild.example.com-1 (wild.example.com): DNS-01 challenge, not HTTP-01",
        "skipping shop/old.example.com-1 (old.example.com): state valid",
    ]
    targets, infos = targets_from_challenges(challenges, ["API.example.com."])
    assert [t.name for t in targets] == ["api.example.com"] and infos == []
    assert targets_from_challenges([], []) == ([], ["no pending HTTP-01 challenge in the list"])


def test_plan_decides_cluster_in_one_place() -> None:
    ssh = ProbeSettings(inside=("ssh node1",))
    kubectl = ProbeSettings(inside=("kubectl exec -n ingress deploy/nginx --",))
    assert not plan(ssh, ["a.example"]).cluster
    assert plan(kubectl, ["a.example"]).cluster
    # Challenges come from a cluster, whatever the vantages
    assert kube.plan([], challenges=[challenge("www.example.com")]).cluster
    with pytest.raises(UsageError, match="--challenges brings its own tokens"):
        kube.plan([], token=KEYAUTH_TOKEN, challenges=[])
