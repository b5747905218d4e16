"""Session stickiness (routing/sticky.py): least recently served sessions go
beyond the bound, a session is forgotten `ttl` seconds after its last served
turn, and reading changes nothing."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from llmgateway.server.routing.sticky import StickySessions, sticky_key


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_sticky_key_separates_callers_routes_and_sessions() -> None:
    assert sticky_key(None, "route/default", "s") == ("", "route/default", "s")
    assert sticky_key("k1", "route/default", "s") != sticky_key("k2", "route/default", "s")
    assert sticky_key("k1", "route/default", "s") != sticky_key("k1", "route/cheap", "s")


def test_a_served_session_is_remembered_until_its_ttl() -> None:
    clock = Clock()
    sessions = StickySessions(ttl=60, max_sessions=10, clock=clock)
    key = sticky_key("k", "route/default", "s1")
    assert sessions.get(key) is None
    sessions.served(key, "zai/glm-4.7@coding")
    clock.now += 59.9
    assert sessions.get(key) == "zai/glm-4.7@coding"
    clock.now += 0.1
    assert sessions.get(key) is None


def test_serving_again_restarts_the_ttl_and_moves_the_session() -> None:
    clock = Clock()
    sessions = StickySessions(ttl=60, max_sessions=10, clock=clock)
    key = sticky_key("k", "route/default", "s1")
    sessions.served(key, "openai/gpt-4o")
    clock.now += 50
    # After a fallback the cache lives on the target that served.
    sessions.served(key, "gemini/gemini-2.5-flash")
    clock.now += 50
    assert sessions.get(key) == "gemini/gemini-2.5-flash"
    assert len(sessions) == 1


def test_reading_does_not_restart_the_ttl() -> None:
    """ExplainRoute and decisions only read: a dry run keeps no session alive."""
    clock = Clock()
    sessions = StickySessions(ttl=60, max_sessions=10, clock=clock)
    key = sticky_key(None, "route/default", "s1")
    sessions.served(key, "openai/gpt-4o")
    for _ in range(5):
        clock.now += 11
        assert sessions.get(key) == "openai/gpt-4o"
    clock.now += 5
    assert sessions.get(key) is None


def test_the_least_recently_served_session_goes_beyond_the_bound() -> None:
    clock = Clock()
    sessions = StickySessions(ttl=600, max_sessions=2, clock=clock)
    a, b, c = (sticky_key("k", "route/default", s) for s in "abc")
    sessions.served(a, "t-a")
    sessions.served(b, "t-b")
    sessions.served(a, "t-a")  # a is now the more recent
    sessions.served(c, "t-c")
    assert len(sessions) == 2
    assert (sessions.get(a), sessions.get(b), sessions.get(c)) == ("t-a", None, "t-c")


def test_expired_sessions_are_dropped_when_another_is_served() -> None:
    clock = Clock()
    sessions = StickySessions(ttl=10, max_sessions=100, clock=clock)
    for index in range(50):
        sessions.served(sticky_key("k", "route/default", str(index)), "t")
    clock.now += 10
    sessions.served(sticky_key("k", "route/default", "new"), "t")
    assert len(sessions) == 1


def test_a_zero_bound_or_ttl_remembers_nothing() -> None:
    for ttl, bound in ((60.0, 0), (0.0, 10)):
        sessions = StickySessions(ttl=ttl, max_sessions=bound, clock=Clock())
        key = sticky_key("k", "route/default", "s")
        sessions.served(key, "t")
        assert sessions.get(key) is None
        assert len(sessions) == 0


_steps = st.lists(
    st.tuples(
        st.sampled_from(["serve", "get", "wait"]),
        st.integers(0, 7),
        st.floats(0, 40, allow_nan=False),
    ),
    max_size=60,
)


@given(steps=_steps, bound=st.integers(1, 5))
def test_it_agrees_with_a_plain_model_and_stays_bounded(
    steps: list[tuple[str, int, float]], bound: int
) -> None:
    """Against a dict of (target, served at, serve order): a session is found
    iff it is within the TTL and among the `bound` most recently served."""
    clock = Clock()
    ttl = 30.0
    sessions = StickySessions(ttl=ttl, max_sessions=bound, clock=clock)
    model: dict[int, tuple[str, float, int]] = {}
    order = 0
    for action, session, amount in steps:
        key = sticky_key("k", "route/default", str(session))
        if action == "serve":
            order += 1
            target = f"target-{order}"
            sessions.served(key, target)
            model[session] = (target, clock.now, order)
        elif action == "wait":
            clock.now += amount
        else:
            recent = sorted(model, key=lambda s: model[s][2])[-bound:]
            fresh = session in model and clock.now < model[session][1] + ttl
            expected = model[session][0] if fresh and session in recent else None
            assert sessions.get(key) == expected
        assert len(sessions) <= bound
