#!/usr/bin/env python3
"""Generates the reference example's contacts.jsonl and events.jsonl, and expected.json:
the outcome worked out here, independently of the engine, from the path each contact is
scripted to take. tests/cli.rs checks `canvass simulate` against expected.json.

Run from anywhere: python3 examples/reference/generate.py
"""
import json
import os
import random
from datetime import datetime, timedelta, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
rng = random.Random(2026)
LAUNCH = datetime(2026, 3, 2, 9, 0, 0, tzinfo=timezone.utc)
DAY = timedelta(days=1)
INVITE_TIMEOUT, LETTER_TIMEOUT, RATING_TIMEOUT = 7 * DAY, 14 * DAY, 30 * DAY
SURVEY_REMINDER, SURVEY_TIMEOUT = 5 * DAY, 7 * DAY
SALES_SLA = 2 * DAY
COST = {"EMAIL": 0.02, "POSTAL_MAIL": 1.20, "TRIAL_OFFER": 15.00, "SALES_HANDOFF": 25.00, "START_CAMPAIGN": 0.0}


def ts(t):
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def at(days, hours=0):
    return LAUNCH + timedelta(days=days, hours=hours)


contacts, events = [], []
serial = [0]


def event(kind, cid, when, **attrs):
    serial[0] += 1
    e = {"id": f"ev-{serial[0]:05d}", "type": kind, "contactId": cid, "occurredAt": ts(when)}
    if attrs:
        e["attrs"] = attrs
    events.append(e)
    return e


# The journeys a buyer of A is scripted to take, with their weights.
PATHS = [
    ("confirm_high", 14), ("confirm_low_answer_early", 4), ("confirm_low_answer_late", 3),
    ("confirm_low_silent", 3), ("confirm_unrated", 6), ("letter_confirm_high", 6),
    ("letter_confirm_low", 3), ("letter_confirm_unrated", 3), ("silent", 30),
]

REGIONS = ["north", "south", "east", "west"]
JOBS = ["engineer", "buyer", "manager", "owner"]

exp = {
    "invite": {"contacts": 0, "states": {}, "groups": {}, "actions": {}, "goal": 0},
    "survey": {"contacts": 0, "states": {}, "groups": {}, "actions": {}, "goal": 0},
    "timers": 0, "fire_times": [], "handoffs": 0,
}


def bump(d, k, n=1):
    d[k] = d.get(k, 0) + n


def survey(cid, rated_at, mode):
    """The survey sub-campaign starts at the low rating; mode says when the contact answers."""
    s = exp["survey"]
    s["contacts"] += 1
    bump(s["actions"], "EMAIL")
    if mode == "early":
        event("survey.completed", cid, rated_at + timedelta(days=rng.randint(1, 4)))
        bump(s["states"], "answered"); bump(s["groups"], "answered"); s["goal"] += 1
        return
    exp["timers"] += 1
    exp["fire_times"].append(rated_at + SURVEY_REMINDER)
    bump(s["actions"], "EMAIL")  # the reminder
    if mode == "late":
        event("survey.completed", cid, rated_at + SURVEY_REMINDER + timedelta(days=rng.randint(1, 6)))
        bump(s["states"], "answered"); bump(s["groups"], "answered"); s["goal"] += 1
    else:
        exp["timers"] += 1
        exp["fire_times"].append(rated_at + SURVEY_REMINDER + SURVEY_TIMEOUT)
        bump(s["states"], "unanswered"); bump(s["groups"], "unanswered")


def confirmed_then(cid, confirmed_at, outcome):
    """After confirming: rate high, rate low (with a survey mode), or never rate."""
    inv = exp["invite"]
    bump(inv["actions"], "TRIAL_OFFER")
    if outcome == "high":
        rated = confirmed_at + timedelta(days=rng.randint(3, 25), hours=rng.randint(0, 12))
        event("trial.rated", cid, rated, rating=rng.choice([4, 5]))
        bump(inv["states"], "rated_high"); bump(inv["groups"], "rated_high"); inv["goal"] += 1
        bump(inv["actions"], "SALES_HANDOFF")
        exp["handoffs"] += 1
        if exp["handoffs"] % 4 == 0:
            # Sales never answers: the two-day SLA runs out and the lead's owner is notified.
            exp["timers"] += 1
            exp["fire_times"].append(rated + SALES_SLA)
            bump(inv["actions"], "NOTIFICATION")
        else:
            event("opportunity.accepted", cid, rated + timedelta(hours=20))
    elif outcome.startswith("low"):
        rated = confirmed_at + timedelta(days=rng.randint(3, 25), hours=rng.randint(0, 12))
        event("trial.rated", cid, rated, rating=rng.choice([1, 2, 3]))
        bump(inv["states"], "rated_low"); bump(inv["groups"], "rated_low")
        bump(inv["actions"], "START_CAMPAIGN")
        survey(cid, rated, outcome.split(":")[1])
    else:
        exp["timers"] += 1
        exp["fire_times"].append(confirmed_at + RATING_TIMEOUT)
        bump(inv["states"], "trial_unrated"); bump(inv["groups"], "confirmed")


for i in range(1, 301):
    cid = f"c-{i:04d}"
    purchases = []
    bought_a = rng.random() < 0.6
    if bought_a:
        purchases.append({"product": "A", "amount": f"{rng.randint(80, 400)}.00",
                          "at": ts(LAUNCH - timedelta(days=rng.randint(20, 400))), "orderId": f"o-{i:04d}-a"})
    if rng.random() < 0.4:
        purchases.append({"product": "C", "amount": f"{rng.randint(10, 90)}.50",
                          "at": ts(LAUNCH - timedelta(days=rng.randint(5, 300)))})
    contact = {"id": cid,
               "attrs": {"email": f"{cid}@example.com", "region": rng.choice(REGIONS),
                         "job": rng.choice(JOBS), "age": rng.randint(22, 70)},
               "stage": "LIFECYCLE_STAGE_CUSTOMER" if purchases else "LIFECYCLE_STAGE_PROSPECT",
               "sourceChannel": rng.choice(["email", "phone", "face_to_face", "media"])}
    if purchases:
        contact["purchases"] = purchases
    if i % 7 == 0:
        contact["tags"] = ["newsletter"]
    contacts.append(contact)

    if rng.random() < 0.5:
        event("email.opened", cid, at(rng.randint(0, 3), rng.randint(1, 20)))
    if not bought_a:
        if rng.random() < 0.08:
            # Heard of the trial from a colleague: not in the audience, so nothing happens.
            event("trial.confirmed", cid, at(rng.randint(1, 6)))
        continue

    inv = exp["invite"]
    inv["contacts"] += 1
    bump(inv["actions"], "EMAIL")
    path = rng.choices([p for p, _ in PATHS], weights=[w for _, w in PATHS])[0]
    if path.startswith("confirm_"):
        confirmed_at = at(rng.randint(0, 6), rng.randint(1, 12))
        event("trial.confirmed", cid, confirmed_at)
        outcome = {"confirm_high": "high", "confirm_low_answer_early": "low:early",
                   "confirm_low_answer_late": "low:late", "confirm_low_silent": "low:silent",
                   "confirm_unrated": "none"}[path]
        confirmed_then(cid, confirmed_at, outcome)
    elif path.startswith("letter_"):
        exp["timers"] += 1
        exp["fire_times"].append(LAUNCH + INVITE_TIMEOUT)
        bump(inv["actions"], "POSTAL_MAIL")
        confirmed_at = at(rng.randint(8, 19), rng.randint(1, 12))
        event("trial.confirmed", cid, confirmed_at)
        confirmed_then(cid, confirmed_at, {"letter_confirm_high": "high", "letter_confirm_low": "low:silent",
                                           "letter_confirm_unrated": "none"}[path])
    else:
        exp["timers"] += 2
        exp["fire_times"] += [LAUNCH + INVITE_TIMEOUT, LAUNCH + INVITE_TIMEOUT + LETTER_TIMEOUT]
        bump(inv["actions"], "POSTAL_MAIL")
        bump(inv["states"], "lapsed"); bump(inv["groups"], "no_reply")

# Edge cases, each worked out by hand.
buyers = [c["id"] for c in contacts if any(p["product"] == "A" for p in c.get("purchases", []))]
# 1. A confirmation exactly at the 7-day deadline: the deadline is inclusive, so the timer
#    fires first (postal mail) and the confirmation then moves the contact on from no_reply.
edge = "c-0301"
contacts.append({"id": edge, "purchases": [{"product": "A", "amount": "120.00", "at": ts(LAUNCH - 30 * DAY)}]})
inv = exp["invite"]
inv["contacts"] += 1
bump(inv["actions"], "EMAIL"); bump(inv["actions"], "POSTAL_MAIL")
exp["timers"] += 1
exp["fire_times"].append(LAUNCH + INVITE_TIMEOUT)
event("trial.confirmed", edge, LAUNCH + INVITE_TIMEOUT)
confirmed_then(edge, LAUNCH + INVITE_TIMEOUT, "high")
# 2. A rating without a `rating` attribute: both guards fail to evaluate (two condition
#    failures, reported) and the contact stays confirmed until the 30-day timeout.
odd = "c-0302"
contacts.append({"id": odd, "purchases": [{"product": "A", "amount": "99.00", "at": ts(LAUNCH - 10 * DAY)}]})
inv["contacts"] += 1
bump(inv["actions"], "EMAIL")
event("trial.confirmed", odd, at(2))
event("trial.rated", odd, at(5), stars=5)
confirmed_then(odd, at(2), "none")
# 3. Bought A only after launch: the audience was evaluated at launch, so not enrolled.
event("purchase", "c-0303", at(3), product="A", amount=150, order_id="o-late")
contacts.append({"id": "c-0303"})
# 4. Events for a contact missing from the contacts file: applied and counted.
event("email.opened", "c-9999", at(1))
event("trial.confirmed", "c-9999", at(2))

events.sort(key=lambda e: e["occurredAt"])
lines = [json.dumps(e, separators=(",", ":")) for e in events]
# 5. A duplicate delivery of an event (same id): ignored and counted.
dup_of = next(l for l in lines if '"trial.rated"' in l)
lines.insert(len(lines) // 2, dup_of)
# 6. Malformed lines: reported with file, line and field, skipped, counted.
lines.insert(10, '{"id":"bad-1","type":"email.opened","occurredAt":"2026-03-03T10:00:00Z"}')
lines.insert(20, '{"id":"bad-2","type":"email.opened","contactId":"c-0001","occurredAt":"yesterday"}')
lines.insert(30, 'this is not json')

with open(os.path.join(HERE, "contacts.jsonl"), "w") as f:
    for c in contacts:
        f.write(json.dumps(c, separators=(",", ":")) + "\n")
with open(os.path.join(HERE, "events.jsonl"), "w") as f:
    f.write("\n".join(lines) + "\n")

# 7. The whole example as one input stream for `canvass run --input stream.jsonl` (and
#    `canvass kafka produce`): each campaign written, submitted, approved by someone else;
#    the survey launched, the contacts, the trial launched, then the events in time order
#    and, last, the lines that are not JSON.
LAUNCH_AT = "2026-03-02T09:00:00Z"
stream = []
for spec_file, cid in [("survey.json", "b-improvement-survey"), ("campaign.json", "b-trial-invite")]:
    with open(os.path.join(HERE, spec_file)) as f:
        spec = json.load(f)
    version = {"campaignId": cid, "version": 1}
    stream.append({"at": LAUNCH_AT, "command": {"actor": "marketer", "putSpec": spec}})
    stream.append({"at": LAUNCH_AT, "command": {"actor": "marketer", "submit": version}})
    stream.append({"at": LAUNCH_AT, "command": {"actor": "manager", "approve": version}})
stream.append({"at": LAUNCH_AT, "command": {"actor": "ops", "launch": "b-improvement-survey"}})
stream += [{"at": LAUNCH_AT, "contact": c} for c in contacts]
stream.append({"at": LAUNCH_AT, "command": {"actor": "ops", "launch": "b-trial-invite"}})
parsed, not_json = [], []
for line in lines:
    try:
        parsed.append(json.loads(line))
    except json.JSONDecodeError:
        not_json.append(line)
parsed.sort(key=lambda e: e.get("occurredAt", ""))
stream += [{"event": e} for e in parsed]
with open(os.path.join(HERE, "stream.jsonl"), "w") as f:
    for record in stream:
        f.write(json.dumps(record, separators=(",", ":")) + "\n")
    for line in not_json:
        f.write(line + "\n")


def campaign(key, cid):
    e = exp[key]
    cost = sum(COST.get(k, 0) * n for k, n in e["actions"].items()) if key == "invite" else 0.02 * e["actions"].get("EMAIL", 0)
    return {"id": cid, "contacts": e["contacts"], "completed": e["contacts"], "active": 0, "holdout": 0,
            "goalReached": e["goal"], "states": dict(sorted(e["states"].items())),
            "responseGroups": dict(sorted(e["groups"].items())), "actionsByKind": dict(sorted(e["actions"].items())),
            "cost": f"{cost:.2f}", **({"budget": "5000.00", "budgetRemaining": f"{5000 - cost:.2f}"} if key == "invite" else {})}


last_event = max(datetime.strptime(e["occurredAt"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc) for e in events)
expected = {
    "inputs": {"lateEvents": 0, "contacts": len(contacts), "events": len(events), "malformedLines": 3, "duplicateEvents": 1,
               "unknownContactEvents": 2, "timersFired": exp["timers"], "pendingTimers": 0},
    "clock": {"start": ts(LAUNCH), "end": ts(max(exp["fire_times"] + [last_event]))},
    "campaigns": [campaign("survey", "b-improvement-survey"), campaign("invite", "b-trial-invite")],
    "diagnostics": {"conditionFailures": 2, "faults": 0},
}
with open(os.path.join(HERE, "expected.json"), "w") as f:
    json.dump(expected, f, indent=2)
    f.write("\n")
print(f"{len(contacts)} contacts, {len(events)} events, {inv['contacts']} enrolled")
