"""Task inference for `route/<name>` requests called with task `auto` (or none).

Deterministic rules, cheap and explainable: no network, no model, no regular
expressions. Each rule has a stable id (the decision names it); the first rule
that fires decides, in this precedence order:

  1. ``tools-present``     the request offers tools                → agent
  2. ``json-schema``       response format JSON schema              → extraction
     ``json-object``       response format any JSON object          → extraction
  3. ``image-parts``       an image part in one of the newest
                           messages                                 → vision
  4. ``code-fences``       a ``` (or ~~~) fence in the scanned text  → code
     ``code-dominant``     most scanned lines look like code        → code
  5. ``cjk-text``          the scanned text is mostly CJK           → translation
                           (signal ``chinese`` when Han dominates)
  6. ``summarize-verb``    summarize / tl;dr / recap / 总结 ...      → summarization
     ``translate-verb``    translate / traduire / 翻译 ...           → translation
  7. ``code-terms``        two or more programming terms            → code
  8. ``reasoning-markers`` two or more maths / logic markers        → reasoning
                           (one marker: reported, below threshold)
  9. ``long-input``        nothing above fired and the prompt is
                           very long                                → default
 10. ``no-signal``         nothing fired                            → default

Rules 1-3 read request fields, not prose, and are certain. Rules 4-8 read
text, and only this text: the *last user turn* (the trailing run of user
messages, at most eight, skipping any assistant or tool messages after it),
its first 2 KiB and last 13 KiB; the verb rules (6) also read the first 1 KiB
of the first system message, where instructions such as "translate everything
into German" live. At most SCAN_LIMIT characters are scanned per request
whatever its size. The signal ``long_input`` (rule 9's, but set whatever rule
decides) tells the router to prefer the longest-context eligible target.

A rule below CONFIDENCE_THRESHOLD still names itself, but ``below_threshold``
is set: the router uses the route's default. Chat has no positive rule: it is
what remains, so a chat prompt is right when it falls to the default.

Cost: the rules' own work is bounded by the scan window and by the message and
part caps below. Reading a string field from protobuf materialises it (upb
decodes it on each read, about 0.15 ms per MB of ASCII), so each field the
rules need is read once, and only from the newest messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, TypeAlias

from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb

if TYPE_CHECKING:
    from collections.abc import Sequence

Request: TypeAlias = pb.CompleteRequest | pb.StreamCompleteRequest


class Task(StrEnum):
    """What the work is; the route table's entries are named after these."""

    CHAT = "chat"
    CODE = "code"
    REASONING = "reasoning"
    EXTRACTION = "extraction"
    SUMMARIZATION = "summarization"
    TRANSLATION = "translation"
    AGENT = "agent"
    VISION = "vision"


class Signal(StrEnum):
    """Facts about the request the router may use beside the task."""

    # Han ideographs dominate the scanned text: a route's `chinese` entry,
    # when it has one, is preferred to its `translation` entry.
    CHINESE = "chinese"
    # The prompt is longer than LONG_INPUT_CHARS: prefer the longest-context
    # eligible target.
    LONG_INPUT = "long_input"


# Rule ids, stable: they appear in routing decisions, logs and metrics.
RULE_TOOLS = "tools-present"
RULE_JSON_SCHEMA = "json-schema"
RULE_JSON_OBJECT = "json-object"
RULE_IMAGES = "image-parts"
RULE_CODE_FENCES = "code-fences"
RULE_CODE_DOMINANT = "code-dominant"
RULE_CJK = "cjk-text"
RULE_SUMMARIZE = "summarize-verb"
RULE_TRANSLATE = "translate-verb"
RULE_CODE_TERMS = "code-terms"
RULE_REASONING = "reasoning-markers"
RULE_LONG_INPUT = "long-input"
RULE_NONE = "no-signal"
RULES: tuple[str, ...] = (
    RULE_TOOLS,
    RULE_JSON_SCHEMA,
    RULE_JSON_OBJECT,
    RULE_IMAGES,
    RULE_CODE_FENCES,
    RULE_CODE_DOMINANT,
    RULE_CJK,
    RULE_SUMMARIZE,
    RULE_TRANSLATE,
    RULE_CODE_TERMS,
    RULE_REASONING,
    RULE_LONG_INPUT,
    RULE_NONE,
)

CONFIDENCE_THRESHOLD = 0.6
# The text window: the last user turn's head (instructions often precede a
# long paste) and tail (or follow it), and the system message's head.
USER_HEAD_CHARS = 2 * 1024
USER_TAIL_CHARS = 13 * 1024
SYSTEM_HEAD_CHARS = 1024
SCAN_LIMIT = USER_HEAD_CHARS + USER_TAIL_CHARS + SYSTEM_HEAD_CHARS
# The newest messages looked at for the user turn and for images, and the
# image parts examined in all: beyond these the capability filter, not task
# inference, is what keeps an image from a model without vision.
MAX_USER_RUN = 8
MAX_IMAGE_MESSAGES = 16
MAX_PARTS_EXAMINED = 256
# About 32k tokens at four characters a token: longer than the smallest
# context windows still in service.
LONG_INPUT_CHARS = 128 * 1024
# The sample the script counts read: a ratio settles within a few hundred
# characters of prose, and counting bytes costs about 1 µs per KiB per pass.
SCRIPT_HEAD_CHARS = 512
SCRIPT_TAIL_CHARS = 1536
# The part of the window the word rules (6-8) read: words and phrases that
# say what the work is sit at the start or the end of what the user wrote.
PROSE_HEAD_CHARS = 2 * 1024
PROSE_TAIL_CHARS = 2 * 1024
# Lines looked at by code-dominant (the newest ones).
MAX_LINES = 256

_CONFIDENCE = {
    RULE_TOOLS: 1.0,
    RULE_JSON_SCHEMA: 1.0,
    RULE_JSON_OBJECT: 0.9,
    RULE_IMAGES: 1.0,
    RULE_CODE_FENCES: 0.95,
    RULE_CODE_DOMINANT: 0.8,
    RULE_CJK: 0.8,
    RULE_SUMMARIZE: 0.85,
    RULE_TRANSLATE: 0.85,
    RULE_CODE_TERMS: 0.7,
    RULE_LONG_INPUT: 0.0,
    RULE_NONE: 0.0,
}
_REASONING_CONFIDENT = 0.65
_REASONING_WEAK = 0.45


@dataclass(frozen=True, slots=True)
class Inference:
    """The inferred task and why: the rule that decided and how sure it is."""

    task: Task
    rule: str
    confidence: float
    # True: the rule's guess is not good enough, use the route's default.
    below_threshold: bool
    signals: frozenset[Signal]
    # Characters of text the rules scanned (at most SCAN_LIMIT).
    scanned_chars: int

    @property
    def entries(self) -> tuple[str, ...]:
        """The route entries to try, in order, before the route's default."""
        if self.below_threshold:
            return ()
        if self.rule == RULE_CJK and Signal.CHINESE in self.signals:
            return (Signal.CHINESE.value, Task.TRANSLATION.value)
        return (self.task.value,)


def infer_task(
    request: Request,
    *,
    prompt_chars: int | None = None,
    threshold: float = CONFIDENCE_THRESHOLD,
) -> Inference:
    """Infer the task of `request` by the rules above, first match wins.

    `prompt_chars` is the caller's size of the whole prompt (the router
    estimates it once for the context-window filter); without it the rules
    count only the text they read (the last user turn and the system
    message), which undercounts long conversations.
    """
    user_text, user_chars = _last_user_turn(request.messages)
    system_text, system_chars = _system_head(request.messages)
    size = prompt_chars if prompt_chars is not None else user_chars + system_chars
    signals: set[Signal] = set()
    if size > LONG_INPUT_CHARS:
        signals.add(Signal.LONG_INPUT)
    script = _script_counts(_window(user_text, SCRIPT_HEAD_CHARS, SCRIPT_TAIL_CHARS))
    if script.han_dominant:
        signals.add(Signal.CHINESE)
    scanned = len(user_text) + len(system_text)

    def decide(task: Task, rule: str, confidence: float | None = None) -> Inference:
        sure = _CONFIDENCE[rule] if confidence is None else confidence
        return Inference(
            task=task,
            rule=rule,
            confidence=sure,
            below_threshold=sure < threshold,
            signals=frozenset(signals),
            scanned_chars=scanned,
        )

    if len(request.tools) > 0:
        return decide(Task.AGENT, RULE_TOOLS)
    format_type = request.response_format.type
    if format_type == common.RESPONSE_FORMAT_TYPE_JSON_SCHEMA:
        return decide(Task.EXTRACTION, RULE_JSON_SCHEMA)
    if format_type == common.RESPONSE_FORMAT_TYPE_JSON_OBJECT:
        return decide(Task.EXTRACTION, RULE_JSON_OBJECT)
    if _has_image(request.messages):
        return decide(Task.VISION, RULE_IMAGES)
    if "```" in user_text or "~~~" in user_text:
        return decide(Task.CODE, RULE_CODE_FENCES)
    if _code_dominant(user_text):
        return decide(Task.CODE, RULE_CODE_DOMINANT)
    if script.mostly_cjk:
        return decide(Task.TRANSLATION, RULE_CJK)
    prose = _Prose.of(_window(user_text, PROSE_HEAD_CHARS, PROSE_TAIL_CHARS))
    system = _Prose.of(system_text)
    if _summarize(prose) or _summarize(system):
        return decide(Task.SUMMARIZATION, RULE_SUMMARIZE)
    if _translate(prose) or _translate(system):
        return decide(Task.TRANSLATION, RULE_TRANSLATE)
    if _code_terms(prose) >= 2:
        return decide(Task.CODE, RULE_CODE_TERMS)
    markers = _reasoning_markers(prose)
    if markers >= 2:
        return decide(Task.REASONING, RULE_REASONING, _REASONING_CONFIDENT)
    if markers == 1:
        return decide(Task.REASONING, RULE_REASONING, _REASONING_WEAK)
    if Signal.LONG_INPUT in signals:
        return decide(Task.CHAT, RULE_LONG_INPUT)
    return decide(Task.CHAT, RULE_NONE)


# --- what is read --------------------------------------------------------------


def _message_text(message: common.ChatMessage) -> str:
    """The message's text: `content`, else its text parts joined by newlines."""
    content = message.content  # read once: each read copies the string out of protobuf
    if content:
        return content
    texts: list[str] = []
    for index, part in enumerate(message.parts):
        if index >= MAX_PARTS_EXAMINED:
            break
        if part.WhichOneof("part") == "text":
            texts.append(part.text)
    return "\n".join(texts)


def chinese_text(request: Request) -> bool:
    """The `chinese` signal alone, as `infer_task` computes it, without the
    rules: for a caller's own task, where only the script can change the entry."""
    user_text, _ = _last_user_turn(request.messages)
    return _script_counts(_window(user_text, SCRIPT_HEAD_CHARS, SCRIPT_TAIL_CHARS)).han_dominant


def _window(text: str, head: int, tail: int) -> str:
    """At most `head + tail` characters: `text`'s first `head`, a newline, and
    its last `tail - 1` (all of `text` if it is no longer)."""
    if len(text) <= head + tail:
        return text
    return text[:head] + "\n" + text[len(text) - tail + 1 :]


def _last_user_turn(messages: Sequence[common.ChatMessage]) -> tuple[str, int]:
    """The scan window over the trailing run of user messages, and their size."""
    index = len(messages) - 1
    # Skip what came after the last user message (an assistant turn, tool
    # results): the user's words are what says what the work is.
    looked = 0
    while index >= 0 and messages[index].role != common.ROLE_USER and looked < MAX_USER_RUN:
        index -= 1
        looked += 1
    run: list[str] = []
    size = 0
    while index >= 0 and messages[index].role == common.ROLE_USER and len(run) < MAX_USER_RUN:
        text = _message_text(messages[index])
        size += len(text)
        run.append(_window(text, USER_HEAD_CHARS, USER_TAIL_CHARS))
        index -= 1
    run.reverse()
    return _window("\n".join(run), USER_HEAD_CHARS, USER_TAIL_CHARS), size


def _system_head(messages: Sequence[common.ChatMessage]) -> tuple[str, int]:
    """The head of the first system message (only the first few are looked at)."""
    for message in messages[:4]:
        if message.role == common.ROLE_SYSTEM:
            text = _message_text(message)
            return text[:SYSTEM_HEAD_CHARS], len(text)
    return "", 0


def _has_image(messages: Sequence[common.ChatMessage]) -> bool:
    """Whether one of the newest messages carries an image part."""
    examined = 0
    for message in messages[-MAX_IMAGE_MESSAGES:]:
        for part in message.parts:
            examined += 1
            if examined > MAX_PARTS_EXAMINED:
                return False
            if part.WhichOneof("part") == "image":
                return True
    return False


# --- scripts -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Scripts:
    han: int
    kana: int
    hangul: int
    latin: int

    @property
    def cjk(self) -> int:
        return self.han + self.kana + self.hangul

    @property
    def mostly_cjk(self) -> bool:
        # A CJK character carries about as much as a short Latin word, so
        # Latin letters are weighed a third: "用Python写一个函数" is CJK.
        return self.cjk >= 4 and self.cjk * 3 >= self.latin

    @property
    def han_dominant(self) -> bool:
        # Japanese writes kana beside its kanji, Korean writes Hangul: what is
        # left with few of either is Chinese.
        return self.mostly_cjk and self.han * 10 >= self.cjk * 9


def _keep_only(keep: range | str) -> bytes:
    """A `bytes.translate` delete table that keeps only the bytes in `keep`."""
    kept = {ord(c) for c in keep} if isinstance(keep, str) else set(keep)
    return bytes(b for b in range(256) if b not in kept)


_LATIN = _keep_only("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
# Lead bytes of U+3000-U+D7FF: CJK punctuation, kana, Han, Hangul (and Yi).
_CJK_LEADS = _keep_only(range(0xE3, 0xEE))
# Lead bytes of U+A000-U+D7FF, Hangul syllables from U+AC00 (Yi below, rare).
_HANGUL_LEADS = _keep_only(range(0xEA, 0xEE))
# U+3040-U+30FF (hiragana, katakana) are E3 81 80 .. E3 83 BF.
_KANA_PREFIXES = (b"\xe3\x81", b"\xe3\x82", b"\xe3\x83")


def _script_counts(sample: str) -> _Scripts:
    """Count Han, kana, Hangul and Latin characters by their UTF-8 bytes.

    `bytes.translate` and `bytes.count` run in C, one pass each over the
    sample, where a Python loop over its characters would cost a hundred
    times more. The ranges are approximate at their edges (CJK punctuation
    counts as Han), which does not move a ratio over a sample of prose.
    """
    raw = sample.encode("utf-8", "surrogatepass")
    cjk = len(raw.translate(None, _CJK_LEADS))
    if cjk == 0:
        return _Scripts(han=0, kana=0, hangul=0, latin=len(raw.translate(None, _LATIN)))
    kana = sum(raw.count(prefix) for prefix in _KANA_PREFIXES)
    hangul = len(raw.translate(None, _HANGUL_LEADS))
    return _Scripts(
        han=cjk - kana - hangul,
        kana=kana,
        hangul=hangul,
        latin=len(raw.translate(None, _LATIN)),
    )


# --- words ---------------------------------------------------------------------

# ASCII punctuation to spaces, on the UTF-8 bytes (bytes from 0x80 up are
# left alone, so the text stays valid); `_`, `+` and `#` stay so that
# snake_case, c++ and c# remain one word each.
_PUNCTUATION = b"!\"$%&'()*,-./:;<=>?@[\\]^`{|}~\t\n\r\x0b\x0c"
_TO_SPACES = bytes.maketrans(_PUNCTUATION, b" " * len(_PUNCTUATION))


@dataclass(frozen=True, slots=True)
class _Prose:
    """Text the word rules read, lowered, and as words between single spaces."""

    lowered: str
    # " word word ... ": `" summar" in spaced` is "a word starts with summar".
    spaced: str
    words: frozenset[str]

    @classmethod
    def of(cls, text: str) -> _Prose:
        lowered = text.lower()
        raw = lowered.encode("utf-8", "surrogatepass").translate(_TO_SPACES)
        split = raw.decode("utf-8", "surrogatepass").split()
        return cls(lowered=lowered, spaced=" " + " ".join(split) + " ", words=frozenset(split))

    def word_starts(self, prefixes: tuple[str, ...]) -> bool:
        return any(" " + prefix in self.spaced for prefix in prefixes)


_SUMMARIZE_PREFIXES = ("summar", "summaris", "tldr", "zusammenfass", "résum", "riassum", "resum")
_SUMMARIZE_WORDS = frozenset({"recap", "synopsis", "gist", "condense", "abridge"})
_SUMMARIZE_PHRASES = (
    "tl;dr",
    "tl,dr",
    "key points",
    "main points",
    "key takeaways",
    "in a nutshell",
    "boil it down",
    "boil this down",
    "short version",
    "one sentence",
    "in brief",
    "总结",
    "概括",
    "摘要",
    "要約",
    "요약",
)


def _summarize(prose: _Prose) -> bool:
    if not prose.words:
        return False
    if not prose.words.isdisjoint(_SUMMARIZE_WORDS) or prose.word_starts(_SUMMARIZE_PREFIXES):
        return True
    return any(phrase in prose.lowered for phrase in _SUMMARIZE_PHRASES)


_TRANSLATE_PREFIXES = ("translat", "tradu", "übersetz", "uebersetz", "vertaal", "przetłumacz")
_LANGUAGES = frozenset(
    {
        "english",
        "french",
        "german",
        "spanish",
        "italian",
        "portuguese",
        "dutch",
        "polish",
        "russian",
        "ukrainian",
        "turkish",
        "arabic",
        "hebrew",
        "hindi",
        "chinese",
        "mandarin",
        "cantonese",
        "japanese",
        "korean",
        "vietnamese",
        "thai",
        "indonesian",
        "swedish",
        "norwegian",
        "danish",
        "finnish",
        "greek",
        "czech",
        "latin",
    }
)
_SAY_PHRASES = ("how do you say", "how do i say", "how would you say", "what is the word for")
_TRANSLATE_CJK = ("翻译", "翻譯", "翻訳", "번역", "译成", "譯成")


def _translate(prose: _Prose) -> bool:
    if not prose.words:
        return False
    if prose.word_starts(_TRANSLATE_PREFIXES):
        return True
    if any(phrase in prose.lowered for phrase in _TRANSLATE_CJK):
        return True
    words = prose.words
    if words.isdisjoint(_LANGUAGES):
        return False
    # "How do you say 'thank you' in Korean?", "Put this into Spanish".
    return any(phrase in prose.spaced for phrase in _SAY_PHRASES) or (
        ("into" in words or "in" in words) and ("put" in words or "render" in words)
    )


# --- code ----------------------------------------------------------------------

_CODE_LINE_STARTS = (
    "def ",
    "class ",
    "import ",
    "from ",
    "return ",
    "if (",
    "for (",
    "while (",
    "} else",
    "#include",
    "function ",
    "const ",
    "let ",
    "var ",
    "public ",
    "private ",
    "fn ",
    "func ",
    "package ",
    "select ",
    "insert into",
    "create table",
    "//",
    "/*",
    "* ",
    "@",
    "$ ",
    ">>> ",
    "<div",
    "<?",
    "echo ",
    "elif ",
    "else:",
    "try:",
    "except",
    "async ",
    "await ",
    "print(",
    "console.",
    "traceback",
    'file "',
)
_CODE_LINE_ENDS = (";", "{", "}", ");", "):", "()", "];", "=>", "\\")


def _code_line(line: str) -> bool:
    stripped = line.strip()
    if not stripped:
        return False
    lowered = stripped.lower()
    if lowered.startswith(_CODE_LINE_STARTS) or stripped.endswith(_CODE_LINE_ENDS):
        return True
    # An assignment or a call on an indented line: `    total += x`, `  foo(bar)`.
    indented = line.startswith(("    ", "\t"))
    return indented and (" = " in stripped or " += " in stripped or stripped.endswith(")"))


def _code_dominant(text: str) -> bool:
    """At least three lines, and at least 40 % of the non-empty ones, are code."""
    lines = [line for line in text.splitlines()[-MAX_LINES:] if line.strip()]
    if len(lines) < 3:
        return False
    code = sum(1 for line in lines if _code_line(line))
    return code >= 3 and code * 10 >= len(lines) * 4


_CODE_TERMS = frozenset(
    {
        "python",
        "javascript",
        "typescript",
        "rust",
        "golang",
        "java",
        "kotlin",
        "swift",
        "c++",
        "c#",
        "sql",
        "postgres",
        "postgresql",
        "mysql",
        "sqlite",
        "bash",
        "shell",
        "powershell",
        "regex",
        "regexp",
        "function",
        "functions",
        "method",
        "compile",
        "compiler",
        "compiles",
        "traceback",
        "stacktrace",
        "segfault",
        "refactor",
        "debug",
        "api",
        "endpoint",
        "dockerfile",
        "docker",
        "kubernetes",
        "html",
        "css",
        "react",
        "django",
        "flask",
        "numpy",
        "pandas",
        "git",
        "npm",
        "pip",
        "recursion",
        "recursive",
        "variable",
        "array",
        "pointer",
        "struct",
        "enum",
        "null",
        "exception",
        "syntax",
        "linter",
        "script",
        "implement",
        "unittest",
        "pytest",
        "async",
        "json",
        "yaml",
        "cli",
        "library",
        "module",
        "interface",
        "query",
        "repository",
        "repo",
        "commit",
        "runtime",
        "bug",
    }
)


def _code_terms(prose: _Prose) -> int:
    """Distinct programming terms, plus calls `f()` and snake_case names."""
    count = len(prose.words & _CODE_TERMS)
    if "()" in prose.lowered:
        count += 1
    # An underscore inside a word (snake_case), not one that starts or ends it.
    if "_" in prose.spaced.replace(" _", " ").replace("_ ", " "):
        count += 1
    return count


# --- reasoning -----------------------------------------------------------------

_REASONING_WORDS = frozenset(
    {
        "prove",
        "proof",
        "theorem",
        "puzzle",
        "riddle",
        "solve",
        "deduce",
        "probability",
        "integer",
        "integers",
        "equation",
        "divisible",
        "prime",
        "remainder",
        "liar",
        "liars",
        "knights",
        "knaves",
        "logically",
        "syllogism",
        "contradiction",
        "minimum",
        "maximum",
        "optimal",
        "expected",
        "digits",
        "sum",
        "odd",
        "even",
        "ratio",
        "percent",
        "average",
        "calculate",
        "infer",
    }
)
_REASONING_PHRASES = (
    "step by step",
    "how many",
    "what is the smallest",
    "what is the largest",
    "if and only if",
    "true or false",
    "who is lying",
    "which of the following",
    "must be true",
    "at least",
    "at most",
)
_ARITHMETIC = "+*/^=%\u00d7\u00f7"  # and the multiplication and division signs
_DIGITS = _keep_only("0123456789")


def _reasoning_markers(prose: _Prose) -> int:
    """Distinct maths and logic markers: words, phrases, arithmetic."""
    count = len(prose.words & _REASONING_WORDS)
    count += sum(1 for phrase in _REASONING_PHRASES if phrase in prose.spaced)
    digits = len(prose.lowered.encode("utf-8", "surrogatepass").translate(None, _DIGITS))
    if digits >= 2 and any(symbol in prose.lowered for symbol in _ARITHMETIC):
        count += 1
    return count
