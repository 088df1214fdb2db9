"""A small client of the canvass gRPC API, generated from proto/ (scripts/python-client.sh).

It writes a campaign (as the marketer), submits it, has it approved (as the approver) and
launched (as the operator), upserts contacts and streams the actions the launch emitted,
acknowledging each (as the service), then reads the campaign's reports (as a reader). It
prints one JSON object with what it saw.

    PYTHONPATH=target/python/gen python canvass_client.py --server 127.0.0.1:50051 \\
        --spec campaign.json --contacts 5

Tokens come from CANVASS_MARKETER_TOKEN, CANVASS_APPROVER_TOKEN, CANVASS_OPERATOR_TOKEN,
CANVASS_SERVICE_TOKEN and CANVASS_READER_TOKEN.
"""

import argparse
import json
import os
import sys

import grpc
from google.protobuf import json_format

from canvass.v1 import (
    action_pb2,
    action_service_pb2,
    action_service_pb2_grpc,
    campaign_pb2,
    campaign_service_pb2,
    campaign_service_pb2_grpc,
    contact_pb2,
    contact_service_pb2,
    contact_service_pb2_grpc,
    report_service_pb2,
    report_service_pb2_grpc,
)


def token(role):
    name = f"CANVASS_{role.upper()}_TOKEN"
    value = os.environ.get(name)
    if not value:
        sys.exit(f"set {name}")
    return [("authorization", f"Bearer {value}")]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True, help="host:port of the engine's gRPC API")
    parser.add_argument("--spec", required=True, help="a campaign spec (canonical JSON)")
    parser.add_argument("--contacts", type=int, default=5, help="contacts to upsert")
    parser.add_argument("--timeout", type=float, default=60, help="seconds to wait for actions")
    args = parser.parse_args()

    channel = grpc.insecure_channel(args.server)
    campaigns = campaign_service_pb2_grpc.CampaignServiceStub(channel)
    contacts = contact_service_pb2_grpc.ContactServiceStub(channel)
    actions = action_service_pb2_grpc.ActionServiceStub(channel)
    reports = report_service_pb2_grpc.ReportServiceStub(channel)

    with open(args.spec) as f:
        spec = json_format.Parse(f.read(), campaign_pb2.CampaignSpec())
    version = dict(campaign_id=spec.id, version=spec.version)

    for i in range(args.contacts):
        contacts.UpsertContact(
            contact_service_pb2.UpsertContactRequest(contact=contact_pb2.Contact(id=f"py-{i}")),
            metadata=token("service"),
        )
    campaigns.CreateCampaign(
        campaign_service_pb2.CreateCampaignRequest(spec=spec, reason="from Python"),
        metadata=token("marketer"),
    )
    campaigns.SubmitCampaign(
        campaign_service_pb2.SubmitCampaignRequest(**version, reason="ready"),
        metadata=token("marketer"),
    )
    campaigns.ApproveCampaign(
        campaign_service_pb2.ApproveCampaignRequest(**version, reason="looks good"),
        metadata=token("approver"),
    )
    launched = campaigns.LaunchCampaign(
        campaign_service_pb2.LaunchCampaignRequest(campaign_id=spec.id, reason="go"),
        metadata=token("operator"),
    )

    # Every action the launch emitted, each acknowledged as delivered once received.
    streamed = []
    stream = actions.StreamActions(
        action_service_pb2.StreamActionsRequest(ack_deadline_seconds=60),
        metadata=token("service"),
        timeout=args.timeout,
    )
    for message in stream:
        action = message.action
        streamed.append({"key": action.idempotency_key, "contact": action.contact_id,
                         "kind": action_pb2.ActionKind.Name(action.kind)})
        actions.AckActions(
            action_service_pb2.AckActionsRequest(results=[action_service_pb2.ActionResult(
                idempotency_key=action.idempotency_key,
                outcome=action_service_pb2.EXECUTION_OUTCOME_DELIVERED,
            )]),
            metadata=token("service"),
        )
        if len(streamed) == args.contacts:
            stream.cancel()
            break

    report = reports.GetCampaignReport(
        report_service_pb2.GetCampaignReportRequest(campaign_id=spec.id),
        metadata=token("reader"),
    )
    performance = reports.GetPerformanceReport(
        report_service_pb2.GetPerformanceReportRequest(campaign_ids=[spec.id]),
        metadata=token("reader"),
    )
    print(json.dumps({
        "launchedAtSeq": launched.seq,
        "actions": streamed,
        "counters": json_format.MessageToDict(report.counters),
        "groups": {g.group: g.contacts for g in report.groups},
        "performance": json.loads(performance.report_json),
        "typedCampaigns": [c.id for c in performance.report.campaigns],
        "typedGoals": [c.goals for c in performance.report.campaigns],
    }))


if __name__ == "__main__":
    main()
