"""PFCF (統一期貨) through `unitrade`, its official Python API: what the live feed
(hftd.feeds.pfcf) and the live venue (hftd.venues.pfcf) share.

- Credentials (`Credentials`): from `[pfcf] credentials`, a TOML file only its owner may
  read (refused otherwise, naming the file), or from the environment (HFTD_PFCF_URL,
  HFTD_PFCF_USERID, HFTD_PFCF_PASSWORD, HFTD_PFCF_CA_PATH, HFTD_PFCF_CA_PASSWORD,
  HFTD_PFCF_ACCOUNT). They never reach a log, a status, a report, a metric or an error:
  `repr` shows none of them and `redact` takes them out of the broker's own messages.
- The session (`login`): one `unitrade.unitrade.Unitrade` per agent process (the producer
  for quotes, the executor for orders), logged in with the credentials. unitrade writes its
  own logs under `./logs` of the working directory when it logs in: the login runs in a
  private directory of the state directory (`pfcf/`, mode 0700), so they are not left in
  `/` or readable by others. They hold the login id, accounts and orders.
- Contract codes (`contract_code`): PFCF's futures codes are the product (TXF, MXF, ...),
  the month letter A-L and the last digit of the year: TXF for December 2026 is TXFL6. An
  expiry "" is pinned to the front month once per run by the supervisor (`pin_expiries`).
- Trading hours (`TradingHours`): TAIFEX's day and night sessions in Taipei time, for the
  quote silence alarm.

Tests replace the network session with a stand-in: HFTD_PFCF_SESSION="module:callable"
names a callable that returns an object shaped like `Unitrade` (the tests' one builds
unitrade's real reply and tick objects). Nothing else reads that variable.
"""

from __future__ import annotations

import errno
import importlib
import os
import re
import tomllib
from dataclasses import dataclass, field

MONTH_CODES = "ABCDEFGHIJKL"  # January .. December
ENV = {"url": "HFTD_PFCF_URL", "userid": "HFTD_PFCF_USERID", "password": "HFTD_PFCF_PASSWORD",
       "ca_path": "HFTD_PFCF_CA_PATH", "ca_password": "HFTD_PFCF_CA_PASSWORD",
       "account": "HFTD_PFCF_ACCOUNT"}
REQUIRED = ("url", "userid", "password", "ca_path", "ca_password")
SECRET = ("userid", "password", "ca_password", "account")  # never shown, even in part
SESSION_ENV = "HFTD_PFCF_SESSION"
MAX_CREDENTIALS = 1 << 16
TAIPEI_UTC_OFFSET_S = 8 * 3600  # no daylight saving


class PfcfError(RuntimeError):
    """PFCF cannot be used as configured (the message names what and why, no secret)."""


@dataclass(frozen=True)
class Credentials:
    url: str
    userid: str = field(repr=False)
    password: str = field(repr=False)
    ca_path: str
    ca_password: str = field(repr=False)
    account: str = field(default="", repr=False)
    source: str = ""  # where they came from (a file name or "environment"), for messages

    def __str__(self) -> str:
        return f"PFCF credentials from {self.source}"

    def redact(self, text) -> str:
        """`text` with every secret of these credentials replaced by ***."""
        text = str(text)
        for k in SECRET:
            v = getattr(self, k)
            if v and len(v) >= 3:
                text = text.replace(v, "***")
        return text


def load_credentials(path: str) -> Credentials:
    """The credentials of `[pfcf] credentials = path` ("" = the environment)."""
    if not path:
        vals = {k: os.environ.get(env, "") for k, env in ENV.items()}
        missing = [ENV[k] for k in REQUIRED if not vals[k]]
        if missing:
            raise PfcfError(f"PFCF credentials: [pfcf] credentials names no file and the "
                            f"environment lacks {', '.join(missing)}")
        return Credentials(**vals, source="environment")
    from .trading.store import StateError, check_private_file

    try:  # (O_NONBLOCK: a FIFO would hang the open; check_private_file refuses it)
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as e:
        why = "a symbolic link (give the file itself)" if e.errno == errno.ELOOP else e.strerror
        raise PfcfError(f"PFCF credentials file {path}: {why}") from None
    try:
        try:
            check_private_file(fd, "PFCF credentials file", path)
        except StateError as e:
            raise PfcfError(str(e).replace(" or use another state_dir", "")) from None
        with os.fdopen(fd, "rb", closefd=False) as f:
            raw = f.read(MAX_CREDENTIALS + 1)
    finally:
        os.close(fd)
    if len(raw) > MAX_CREDENTIALS:
        raise PfcfError(f"PFCF credentials file {path} is over {MAX_CREDENTIALS} bytes: not a "
                        f"credentials file")
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        # the parser's message may quote the line it stopped at: a password. Only where.
        where = re.search(r"\(at line \d+, column \d+\)", str(e))
        raise PfcfError(f"PFCF credentials file {path} is not TOML"
                        f"{' ' + where.group(0) if where else ''}") from None
    unknown = set(doc) - set(ENV)
    if unknown:  # (not named: a password typed on a line of its own would be the key)
        raise PfcfError(f"PFCF credentials file {path} has {len(unknown)} key(s) other than "
                        f"{', '.join(ENV)}")
    bad = [k for k, v in doc.items() if not isinstance(v, str)]
    if bad:
        raise PfcfError(f"PFCF credentials file {path}: {bad[0]} must be a string")
    missing = [k for k in REQUIRED if not doc.get(k)]
    if missing:
        raise PfcfError(f"PFCF credentials file {path} lacks {', '.join(missing)}")
    return Credentials(**{k: doc.get(k, "") for k in ENV}, source=path)


def contract_code(product: str, expiry: str) -> str:
    """PFCF's code of a futures contract: product + month letter + last digit of the year
    ("TXF", "202612" -> "TXFL6")."""
    if not re.fullmatch(r"[0-9]{4}(0[1-9]|1[0-2])", expiry or ""):
        raise PfcfError(f"contract month {expiry!r} must be YYYYMM")
    return f"{product}{MONTH_CODES[int(expiry[4:]) - 1]}{expiry[3]}"


def front_month(unix_s: float) -> str:
    """TAIFEX's front month of its index futures at `unix_s` (YYYYMM): a contract's last
    trading day is the third Wednesday of its month, its day session closing at 13:30 Taipei;
    from then on the next month is the front month (TAIFEX's holidays are not known here: a
    last trading day moved by one is not either)."""
    import datetime

    t = datetime.datetime.fromtimestamp(unix_s, datetime.timezone(
        datetime.timedelta(seconds=TAIPEI_UTC_OFFSET_S)))
    first = datetime.date(t.year, t.month, 1)
    third_wed = first + datetime.timedelta(days=(2 - first.weekday()) % 7 + 14)
    y, m = t.year, t.month
    if (t.date(), t.hour * 60 + t.minute) >= (third_wed, 13 * 60 + 30):
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return f"{y:04d}{m:02d}"


def pin_expiries(cfg, unix_s: float, running=None):
    """`cfg` with each PFCF instrument's expiry "" replaced by the front month at `unix_s`,
    or by the month `running` (the running config) already has for it: the supervisor does it
    once for the run, so that the producer and the executor (and every restart of either)
    trade the same contracts (found by a hostile review: each resolving it at its own login
    could differ across a roll)."""
    import msgspec

    before = {i.symbol: i.expiry for i in running.instruments} if running is not None else {}
    month = front_month(unix_s)
    ins = [msgspec.structs.replace(i, expiry=before.get(i.symbol) or month)
           if i.pfcf and not i.expiry else i for i in cfg.instruments]
    return msgspec.structs.replace(cfg, instruments=ins)


def contract_codes(instruments) -> dict[str, int]:
    """PFCF contract code -> instrument index, for the instruments with a `pfcf` product (their
    expiries pinned: `pin_expiries`)."""
    codes = {}
    for i, ins in enumerate(instruments):
        if ins.pfcf:
            if not ins.expiry:
                raise PfcfError(f"instrument {ins.symbol}: no contract month (expiry) pinned")
            codes[contract_code(ins.pfcf, ins.expiry)] = i
    return codes


def _factory():
    spec = os.environ.get(SESSION_ENV, "")
    if spec:
        mod, _, name = spec.partition(":")
        return getattr(importlib.import_module(mod), name or "Unitrade")
    try:
        from unitrade.unitrade import Unitrade
    except ImportError:
        raise PfcfError("the PFCF API is not installed: pip install 'hftd[pfcf]' (it installs "
                        "PFCF's unitrade package)") from None
    return Unitrade


def workdir(state_dir: str) -> str:
    """`state_dir`/pfcf (made, mode 0700): unitrade's working directory for its logs."""
    d = os.path.join(os.path.abspath(state_dir), "pfcf")
    os.makedirs(d, mode=0o700, exist_ok=True)
    os.chmod(d, 0o700)
    return d


def login(creds: Credentials, connect=None, workdir: str | None = None):
    """A logged-in session. `connect(api)` is called before the login, to set the
    connection callbacks (the login fires them). With `workdir`, the login runs there:
    unitrade's components open their logs under ./logs when they start, at the login."""
    api = _factory()()
    if connect is not None:
        connect(api)
    here = os.getcwd()
    if workdir:
        os.chdir(workdir)
    try:
        r = api.login(creds.url, creds.userid, creds.password, creds.ca_path, creds.ca_password)
    except Exception as e:  # a broker library's error: its text may hold what we passed
        logout(api)
        raise PfcfError(f"PFCF login to {creds.url} failed: "
                        f"{creds.redact(f'{type(e).__name__}: {e}')}") from None
    finally:
        if workdir:
            os.chdir(here)
    if not getattr(r, "ok", False):
        logout(api)  # (a failed login leaves unitrade's log writer running)
        raise PfcfError(f"PFCF login to {creds.url} failed: "
                        f"{creds.redact(getattr(r, 'error', '') or 'no reason given')}")
    if connect is not None:
        # the login sets each component's on_error to its own logger (found by a hostile
        # review: hftd then never saw unitrade's errors): the callbacks are set again
        connect(api)
    return api


def logout(api) -> None:
    """Log out, whatever the state: unitrade's threads are not daemon threads, and a process
    that keeps them does not exit."""
    try:
        api.logout()
    except Exception:  # nothing more to do at this point
        pass


def account_of(api, creds: Credentials, configured: str) -> str:
    """The trading account: the configured one, the credentials' one, or the login's only
    one. Checked against the login's accounts (shown only by position, never in full)."""
    accounts = list(api.get_accounts() or [])
    want = configured or creds.account
    if want:
        if want not in accounts:
            raise PfcfError(f"PFCF: the configured trading account is not among the login's "
                            f"{len(accounts)} account(s)")
        return want
    if len(accounts) != 1:
        raise PfcfError(f"PFCF: the login has {len(accounts)} trading accounts; name one "
                        f"([pfcf] account or the credentials' account)")
    return accounts[0]


def hand_over(q, item, wake) -> None:
    """On unitrade's thread: `item` to the agent's deque `q` (one append: no lock), ringing
    its doorbell `wake()` only when `q` was empty (a parked agent wakes; a busy one finds it)."""
    q.append(item)
    if len(q) == 1:
        wake()


def error_text(args) -> str:
    """unitrade's on_error arguments as text: it passes (message) or (component, exception);
    the component (anything with an on_error of its own) is left out."""
    return " ".join(str(x) for x in args if not hasattr(x, "on_error"))


def set_connection_callbacks(component, on_connected, on_disconnected, on_error) -> None:
    """unitrade's components spell the disconnect callback `on_disonnected` (and its tutorial
    `on_disconnected`): both are set."""
    component.on_connected = on_connected
    component.on_disonnected = on_disconnected
    component.on_disconnected = on_disconnected
    component.on_error = on_error


# --- time ---------------------------------------------------------------------------------
def _clock_s(text: str) -> int:
    h, m = text.split(":")
    return int(h) * 3600 + int(m) * 60


class TradingHours:
    """Sessions as "HH:MM-HH:MM" in Taipei time that open on the ISO weekdays `days` (Monday
    1 .. Sunday 7) except the dates `holidays` ("YYYY-MM-DD"); a session whose end is before
    its start runs past midnight into the next day (the night session, 15:00-05:00: Friday's
    ends on Saturday morning, none opens on Saturday)."""

    def __init__(self, spans: list[str], days=(1, 2, 3, 4, 5), holidays=()):
        self.spans = [(_clock_s(a), _clock_s(b)) for a, b in (s.split("-") for s in spans)]
        self.days = set(days)
        self.holidays = set(holidays)

    def _opens_on(self, day: int) -> bool:
        """Sessions open on Taipei day number `day` (days since 1970-01-01, a Thursday)."""
        if (day + 3) % 7 + 1 not in self.days:
            return False
        if self.holidays:
            import datetime

            return (datetime.date(1970, 1, 1) + datetime.timedelta(days=day)).isoformat() \
                not in self.holidays
        return True

    def open_at(self, unix_s: float) -> bool:
        local = int(unix_s + TAIPEI_UTC_OFFSET_S)
        day, t = divmod(local, 86400)
        for a, b in self.spans:
            if a < b:
                if a <= t < b and self._opens_on(day):
                    return True
            elif (t >= a and self._opens_on(day)) or (t < b and self._opens_on(day - 1)):
                return True
        return False


HOURS_RE = re.compile(r"(([01][0-9]|2[0-3]):[0-5][0-9])-(([01][0-9]|2[0-3]):[0-5][0-9])")


def exchange_time_ns(hhmmss_frac: str, now_ns: int) -> int:
    """A quote time "HHMMSSffffff" (Taipei, microseconds) as ns since the epoch: on the
    Taipei day that puts it nearest to `now_ns` (a quote just before midnight received just
    after it belongs to the day before). 0 if it is not such a time."""
    s = hhmmss_frac.strip() if isinstance(hhmmss_frac, str) else ""
    if len(s) < 6 or not (s.isascii() and s.isdigit()):  # ('²'.isdigit(), int('²') fails)
        return 0
    h, m, sec = int(s[0:2]), int(s[2:4]), int(s[4:6])
    if h > 23 or m > 59 or sec > 59:
        return 0
    frac = s[6:12].ljust(6, "0")
    tod_ns = ((h * 60 + m) * 60 + sec) * 1_000_000_000 + int(frac) * 1000
    day_ns = 86400 * 1_000_000_000
    local = now_ns + TAIPEI_UTC_OFFSET_S * 1_000_000_000
    midnight = local - local % day_ns
    t = midnight + tod_ns
    if t - local > day_ns // 2:
        t -= day_ns
    elif local - t > day_ns // 2:
        t += day_ns
    return t - TAIPEI_UTC_OFFSET_S * 1_000_000_000
