"""The chat page as a user meets it: streaming replies, regenerate, a rating, the arena,
and a model that stops answering — each checked in the browser and in the database."""

from __future__ import annotations

from playwright.sync_api import expect
from sqlmodel import select

from paddock import privacy
from paddock.db import session_scope
from paddock.models import Battle, Conversation, Feedback, Message
from tests.stress.fakeserver import FakeServer
from tests.web.conftest import PHONE, Deploy, Tab

REPLY_A = " ".join(f"w{i}" for i in range(12))  # what model_a streams
REPLY_B = " ".join(f"w{i}" for i in range(7))  # what model_b streams


def start(tab: Tab, *, arena: bool = False, consent: bool = True) -> None:
    page = tab.page
    if arena:
        page.get_by_label("Arena").check()
    if consent:
        page.get_by_label("Share this conversation").check()
    page.get_by_role("button", name="Start conversation").click()
    expect(page.locator("#conversation")).to_be_visible()


def send(tab: Tab, text: str) -> None:
    tab.page.get_by_label("Your message").fill(text)
    tab.page.get_by_label("Your message").press("Enter")


def fits_width(tab: Tab) -> bool:
    return bool(tab.page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"))


def test_beta_chat_streams_regenerates_and_ends_with_feedback(
    tab: Tab, deploy: Deploy, model_a: FakeServer
) -> None:
    sub = deploy(model_a, name="aurora-1b", developer="alice")
    model_a.token_delay_s = 0.1  # long enough to watch the reply grow
    page = tab.page
    tab.goto("/")
    expect(page.get_by_role("heading", name="Talk to the newest models")).to_be_visible()
    tab.shot("chat-start")

    start(tab)
    expect(page.locator("#conversation-title")).to_have_text("You are talking to aurora-1b")
    send(tab, "Hello there, who are you?")
    reply = page.locator(".msg.assistant").last
    # Part of the reply is on screen while the rest is still being generated.
    page.wait_for_function(
        """() => {
            const r = [...document.querySelectorAll('.msg.assistant .body')].pop();
            return r && r.textContent.includes('w1 ') && !r.textContent.includes('w11');
        }"""
    )
    expect(reply).to_have_class("msg assistant streaming")
    expect(reply.locator(".body")).to_have_text(REPLY_A + " ")
    expect(reply).not_to_have_class("msg assistant streaming")
    expect(reply.locator(".meta")).to_contain_text("12 tokens")
    expect(page.locator(".msg.user .body")).to_have_text("Hello there, who are you?")
    tab.shot("chat-beta-reply")

    model_a.token_delay_s = 0.0
    page.get_by_role("button", name="Regenerate last reply").click()
    expect(page.locator(".msg.assistant")).to_have_count(1)
    expect(page.locator(".msg.assistant .meta")).to_contain_text("tokens")
    expect(page.get_by_role("button", name="Regenerate last reply")).to_be_enabled()

    page.get_by_text("Bad", exact=True).click()
    page.get_by_label("What should the developer know?").fill("It only counts: w0 w1 w2.")
    page.get_by_role("button", name="End conversation and send feedback").click()
    expect(page.get_by_role("heading", name="Thank you")).to_be_visible()
    expect(page.locator("#composer")).to_be_hidden()
    tab.shot("chat-beta-ended")

    user_id = page.evaluate("localStorage.getItem('paddock.userId')")
    with session_scope() as session:
        fb = session.exec(select(Feedback)).one()
        conv = session.get(Conversation, fb.conversation_id)
        replies = session.exec(select(Message).where(Message.role == "assistant")).all()
    assert (fb.submission_id, fb.thumbs_up, fb.text) == (sub.id, False, "It only counts: w0 w1 w2.")
    assert conv is not None and conv.consent and conv.ended_at is not None
    assert conv.user_hash == privacy.hash_user(user_id) != user_id
    assert [(m.regenerated, m.superseded) for m in replies] == [(False, True), (True, False)]
    page.set_viewport_size(PHONE)
    assert fits_width(tab)
    tab.shot("chat-beta-ended-phone")
    page.get_by_role("button", name="Start a new conversation").click()
    expect(page.get_by_role("button", name="Start conversation")).to_be_visible()
    expect(page.locator("#conversation")).to_be_hidden()
    tab.assert_clean()


def test_arena_shows_two_anonymous_replies_and_names_them_after_the_vote(
    tab: Tab, deploy: Deploy, model_a: FakeServer, model_b: FakeServer
) -> None:
    first = deploy(model_a, name="aurora-1b", developer="alice")
    second = deploy(model_b, name="breeze-3b", developer="bob")
    page = tab.page
    tab.goto("/chat")
    start(tab, arena=True)
    expect(page.locator(".pane-title")).to_have_text(["Model A", "Model B"])
    expect(page.get_by_role("button", name="A is better")).to_be_disabled()

    question = "Write a haiku about paddocks."
    send(tab, question)
    panes = page.locator(".pane")
    for i in range(2):
        expect(panes.nth(i).locator(".msg.user .body")).to_have_text(question)
        expect(panes.nth(i).locator(".msg.assistant .meta")).to_contain_text("tokens")
    texts = sorted(panes.locator(".msg.assistant .body").all_text_contents())
    assert texts == sorted([REPLY_A + " ", REPLY_B + " "])
    html = page.content()
    assert "aurora-1b" not in html and "breeze-3b" not in html and "alice" not in html
    expect(page.get_by_role("button", name="A is better")).to_be_enabled()
    tab.shot("chat-arena-before-vote")

    page.get_by_role("button", name="Regenerate both replies").click()
    expect(page.get_by_role("button", name="Regenerate both replies")).to_be_enabled()
    for i in range(2):
        expect(panes.nth(i).locator(".msg.assistant")).to_have_count(1)
        expect(panes.nth(i).locator(".msg.assistant .meta")).to_contain_text("tokens")

    page.get_by_role("button", name="A is better").click()
    titles = page.locator(".pane-title")
    expect(titles.first).to_contain_text("your pick")
    names = titles.all_text_contents()
    with session_scope() as session:
        battle = session.exec(select(Battle)).one()
        regenerated = session.exec(select(Message).where(Message.regenerated)).all()
    assert sorted(m.side or "" for m in regenerated) == ["a", "b"]
    by_id = {first.id: "aurora-1b by alice", second.id: "breeze-3b by bob"}
    assert by_id[battle.model_a] in names[0] and by_id[battle.model_b] in names[1]
    assert battle.winner == "model_a"
    expect(page.locator("#ended-text")).to_contain_text(f"Model A was {by_id[battle.model_a]}")
    expect(page.locator("#vote-form")).to_be_hidden()
    tab.shot("chat-arena-revealed")

    page.set_viewport_size(PHONE)
    assert fits_width(tab)
    tab.shot("chat-arena-revealed-phone")
    tab.assert_clean()


def test_a_model_that_stops_answering_is_reported_and_the_conversation_kept(
    tab: Tab, deploy: Deploy, model_a: FakeServer
) -> None:
    deploy(model_a, name="aurora-1b", developer="alice")
    page = tab.page
    tab.goto("/chat")
    start(tab, consent=False)
    send(tab, "First question")
    expect(page.locator(".msg.assistant .meta")).to_contain_text("12 tokens")

    model_a.fail_every = 1  # every request now answers 500
    send(tab, "Second question")
    error = page.get_by_role("alert").filter(has_text="stopped answering")
    expect(error).to_be_visible()
    expect(error).to_contain_text("aurora-1b stopped answering (HTTP 500)")
    expect(page.locator(".msg.user .body")).to_have_text(["First question", "Second question"])
    expect(page.locator(".msg.assistant.failed")).to_have_count(1)
    expect(page.locator(".msg.assistant").first.locator(".body")).to_have_text(REPLY_A + " ")
    retry = page.get_by_role("button", name="Try again")
    expect(retry).to_be_visible()
    expect(page.get_by_label("Your message")).to_be_enabled()
    tab.shot("chat-model-down")

    model_a.fail_every = 0
    retry.click()
    expect(page.locator(".msg.assistant.failed")).to_have_count(0)
    expect(page.locator(".msg.assistant .body")).to_have_text([REPLY_A + " ", REPLY_A + " "])
    expect(error).to_be_hidden()
    expect(page.get_by_role("button", name="Regenerate last reply")).to_be_visible()
    tab.assert_clean(http_errors=1)  # the 503 that said the model was down


def test_a_reply_that_breaks_off_keeps_its_words_and_can_be_tried_again(
    tab: Tab, deploy: Deploy, model_a: FakeServer
) -> None:
    deploy(model_a, name="aurora-1b", developer="alice")
    model_a.stall_after = 3  # three words, then silence until the relay gives up
    page = tab.page
    tab.goto("/chat")
    start(tab)
    send(tab, "Tell me a long story")
    broken = page.locator(".msg.assistant.failed")
    expect(broken.locator(".body")).to_have_text("w0 w1 w2 ")
    expect(broken.locator(".meta")).to_have_text("The reply broke off here.")
    expect(page.locator("#chat-error")).to_contain_text("aurora-1b stopped answering")
    tab.shot("chat-reply-broke-off")

    model_a.stall_after = None
    page.get_by_role("button", name="Try again").click()
    expect(page.locator(".msg.assistant")).to_have_count(1)
    expect(page.locator(".msg.assistant .body")).to_have_text(REPLY_A + " ")
    expect(page.locator("#chat-error")).to_be_hidden()
    tab.assert_clean()


def test_no_model_to_talk_to_is_said_on_the_start_form(tab: Tab) -> None:
    tab.goto("/chat")
    tab.page.get_by_role("button", name="Start conversation").click()
    alert = tab.page.locator("#start-error")
    expect(alert).to_contain_text("no model can take a new beta conversation right now")
    expect(tab.page.locator("#conversation")).to_be_hidden()
    tab.assert_clean(http_errors=1)
