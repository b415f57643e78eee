"""The developer dashboard: a key in, own submissions with their timelines, the feedback
users left, sampled conversations and the leaderboard out; a bad key is said so."""

from __future__ import annotations

from playwright.sync_api import expect

from paddock import conversations, crud, lifecycle, verdicts
from paddock.db import session_scope
from paddock.models import (
    ConversationMode,
    Feedback,
    LeaderboardSnapshot,
    StageStatus,
    Status,
    Submission,
)
from tests.stress.fakeserver import FakeServer
from tests.web.conftest import PHONE, Deploy, Tab, developer


def rejected_at_sanity(developer: str) -> Submission:
    """A submission as the pipeline leaves one whose checks refused it."""
    sub = crud.create_submission(
        developer=developer, source="paddock-test/broken-config", display_name="broken-config"
    )
    lifecycle.transition(sub.id, Status.downloading)
    run = crud.start_stage(submission_id=sub.id, stage="download")
    assert run.id is not None
    crud.finish_stage(run_id=run.id, status=StageStatus.succeeded)
    lifecycle.transition(sub.id, Status.checking)
    run = crud.start_stage(submission_id=sub.id, stage="sanity")
    assert run.id is not None
    why = "config.json has no `architectures`: the model class cannot be chosen"
    crud.finish_stage(run_id=run.id, status=StageStatus.rejected, detail={"error": why})
    lifecycle.transition(sub.id, Status.failed, reason=why, failed_stage="sanity")
    return sub


def rated(submission_id: str, *, up: bool, text: str | None, category: str | None) -> None:
    """A shared beta conversation of two turns, ended with a rating."""
    conv = conversations.start_conversation(
        mode=ConversationMode.beta, user_id="user-1", submission_id=submission_id, consent=True
    )
    conversations.add_user_message(conversation_id=conv.id, content="Mail me at ann@example.com")
    conversations.add_reply(
        conversation_id=conv.id,
        submission_id=submission_id,
        content="Sure, I will write to you.",
        ttft_ms=42.0,
        latency_ms=300.0,
        output_tokens=7,
    )
    fb = verdicts.end_with_feedback(conversation_id=conv.id, thumbs_up=up, text=text)
    if category:
        with session_scope() as session:
            row = session.get(Feedback, fb.id)
            assert row is not None
            row.category = category
            session.add(row)


def test_dashboard_shows_own_timelines_feedback_samples_and_leaderboard(
    tab: Tab, deploy: Deploy, model_a: FakeServer, model_b: FakeServer
) -> None:
    alice = developer("alice")
    live = deploy(model_a, name="aurora-1b", developer="alice")
    broken = rejected_at_sanity("alice")
    others = deploy(model_b, name="breeze-3b", developer="bob")
    rated(live.id, up=False, text="It promised to e-mail me. It cannot.", category="hallucination")
    rated(live.id, up=True, text=None, category=None)
    with session_scope() as session:
        session.add(
            LeaderboardSnapshot(
                rows=[
                    {
                        "rank": 1,
                        "name": "breeze-3b",
                        "developer": "bob",
                        "ratings": 9,
                        "thumbs_up_rate": 0.778,
                    },
                    {
                        "rank": 2,
                        "name": "aurora-1b",
                        "developer": "alice",
                        "ratings": 2,
                        "thumbs_up_rate": 0.5,
                    },
                ],  # fmt: skip
                arena=[{"rank": 1, "name": "breeze-3b", "elo": 1012.4, "battles": 3}],
            )
        )

    page = tab.page
    tab.goto("/dashboard")
    tab.shot("dashboard-key")
    page.get_by_label("API key", exact=True).fill(alice.key)
    page.get_by_role("button", name="Show my models").click()
    expect(page.locator("#developer-name")).to_have_text("alice")

    cards = page.locator("article.submission")
    expect(cards).to_have_count(2)
    card = page.locator(f'article[data-submission="{live.id}"]')
    expect(card.get_by_role("heading", name=f"aurora-1b {live.id}")).to_be_visible()
    expect(card.locator(".submission-head .badge")).to_have_text("deployed")
    stages = card.locator("table.stages tbody tr")
    expect(stages).to_have_count(len(lifecycle.STAGES))
    expect(stages.first).to_contain_text("download")
    expect(stages.first.locator("td").nth(3)).to_have_text("2")  # attempts
    expect(card.locator(".timeline .summary")).to_contain_text("within SLA")
    expect(card.locator(".feedback .stats")).to_contain_text("ratings2")
    ratings = card.locator(".ratings li")
    expect(ratings).to_have_count(2)
    expect(card.locator(".ratings")).to_contain_text("It promised to e-mail me. It cannot.")
    expect(card.locator(".ratings")).to_contain_text("hallucination")

    card.get_by_text("Shared conversations").click()
    sample = card.locator(".sample")
    expect(sample).to_have_count(2)
    # What users wrote comes back scrubbed, and without who they are.
    expect(sample.first).to_contain_text("Mail me at [email]")
    expect(sample.first).not_to_contain_text("ann@example.com")

    failed = page.locator(f'article[data-submission="{broken.id}"]')
    expect(failed.locator(".submission-head .badge")).to_have_text("failed")
    expect(failed.locator(".timeline")).to_contain_text("sanity: config.json has no")
    expect(page.locator(f'article[data-submission="{others.id}"]')).to_have_count(0)

    board = page.locator("#leaderboard table").first
    expect(board.locator("tbody tr")).to_have_count(2)
    expect(board.locator("tr.mine")).to_contain_text("aurora-1b")
    expect(page.locator("#leaderboard table").nth(1)).to_contain_text("1012.4")
    tab.shot("dashboard")

    # The key outlives a reload of the tab (sessionStorage), not the tab itself.
    assert page.evaluate("sessionStorage.getItem('paddock.apiKey')") == alice.key
    assert page.evaluate("localStorage.length") == 0
    page.reload()
    expect(page.locator("#developer-name")).to_have_text("alice")
    page.set_viewport_size(PHONE)
    expect(cards).to_have_count(2)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    tab.shot("dashboard-phone")

    page.get_by_role("button", name="Forget key").click()
    expect(page.get_by_label("API key", exact=True)).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('paddock.apiKey')") is None
    tab.assert_clean()


def test_a_wrong_key_is_refused_with_the_reason(tab: Tab) -> None:
    developer("alice")
    page = tab.page
    tab.goto("/dashboard")
    page.get_by_label("API key", exact=True).fill("pdk_not-a-real-key")
    page.get_by_role("button", name="Show my models").click()
    alert = page.get_by_role("alert").filter(has_text="That key was not accepted")
    expect(alert).to_contain_text("unknown API key")
    expect(page.get_by_label("API key", exact=True)).to_be_visible()
    expect(page.locator("#submissions-section")).to_be_hidden()
    assert page.evaluate("sessionStorage.getItem('paddock.apiKey')") is None
    tab.shot("dashboard-wrong-key")
    tab.assert_clean(http_errors=1)
