"""What a unit once held, kept apart from its log, so that a log cut short is noticed.

A root user with the unit files can cut the end off a segment (on both units, even) and run
``rebuild-index``: the chain that is left is whole, so it proves nothing by itself. Each
unit therefore keeps, in its own chain (``local/``, localchain.py), the newest head of the
log that it knows existed:
- a mirror, the head it received and made durable (``head`` events);
- a primary, the head its mirror acknowledged (``peer_head`` events): proof that the log
  reached that far, held by two units.
Each carries ``event_seq`` and ``event_hash`` of that event and ``next_serial``, the next
record serial then, so a serial handed out once is never handed out again even if the events
that used it are gone. They are written at most every HEAD_INTERVAL_US (and at close), so a cut of the
last few seconds before a crash can go unseen; anything longer is reported by ``verify`` and
``status`` naming the missing sequence numbers (``problems``).
"""
from .maintenance import event_hash_at

HEAD_INTERVAL_US = 5_000_000
HEAD_TYPES = ("head", "peer_head")


class HeadKeeper:
    def __init__(self, chain, etype):
        self.chain, self.etype = chain, etype
        last = chain.last_head
        self._seq = last["event_seq"] if last else 0
        self._at = None

    @property
    def seq(self):
        """The newest head recorded: an event known durable on two units (catch_up never
        cuts a log back past it)."""
        return self._seq

    def due(self, now_us):
        return self._at is None or now_us - self._at >= HEAD_INTERVAL_US

    def note(self, now_us, seq, ev_hash, next_serial, force=False):
        """Record head ``seq`` if it is newer than the last one and one is due."""
        if seq <= self._seq or not ev_hash:
            return
        if not force and self._at is not None and now_us - self._at < HEAD_INTERVAL_US:
            return
        self.chain.append(now_us, self.etype, event_seq=seq, event_hash=ev_hash,
                          next_serial=next_serial)
        self._seq, self._at = seq, now_us


def contradiction(log, ix, seq, want):
    """How the log contradicts a head (event ``seq`` with hash ``want``) that a unit once
    held: ("short", the events missing as text), ("unreadable", why), ("other", None) when
    event ``seq`` has another hash, or None when the log agrees."""
    with ix.read() as txn:
        have = ix.meta(txn, "last_seq", 0)
    if have < seq:
        return "short", (f"{have + 1}" if have + 1 == seq else f"{have + 1} to {seq}"), have
    try:
        mine = event_hash_at(log, ix, seq)
    except Exception as e:  # damage: verify's walk reports it in its own words
        return "unreadable", str(e), have
    return ("other", None, have) if mine != want else None


def problems(chain, log, ix):
    """One line for each way the log contradicts the newest head ``chain`` recorded."""
    last = chain.last_head if chain is not None else None
    if not last:
        return []
    seq = int(last["event_seq"])
    who = ("this unit's mirror acknowledged" if last["type"] == "peer_head"
           else "this unit received")
    c = contradiction(log, ix, seq, last.get("event_hash"))
    if c is None:
        return []
    kind, what, have = c
    if kind == "short":
        return [f"the log ends at event {have}, but {who} event {seq} on {last['time']}: "
                f"events {what} are missing from the log (cut short outside wormfs?); "
                f"repair from the other unit ('wormfs scrub --repair') or examine it"]
    if kind == "unreadable":
        return [f"event {seq}, which {who} on {last['time']}, cannot be read: {what}"]
    return [f"event {seq} in the log is not the one {who} on {last['time']} (its hash "
            f"differs): the log was rewritten outside wormfs"]
