"""A stdio MCP server with many generated tools, written with the official SDK's low-level API.

``python bench/many_tools_server.py [N]`` (default 250) serves N tools such as
``create_calendar_event`` or ``list_kubernetes_pods``: actions on resources of the kinds real MCP
servers expose, each with a sentence or two of description and a JSON schema of typed, described
parameters (some required), so that the size of a ``tools/list`` is like a real catalog's. A call
answers what it was called with. Deterministic: the same N gives the same tools.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import anyio
import mcp_types as types
from mcp.server.lowlevel.server import Server
from mcp.server.stdio import stdio_server

# (singular, plural, what it is, its fields: name -> (JSON type, description))
RESOURCES: list[tuple[str, str, str, dict[str, tuple[str, str]]]] = [
    ("calendar_event", "calendar_events", "an event in the user's calendar",
     {"title": ("string", "The event's title"), "start": ("string", "Start time, ISO 8601 with a timezone"),
      "end": ("string", "End time, ISO 8601 with a timezone"), "attendees": ("array", "Email addresses to invite")}),
    ("github_issue", "github_issues", "an issue in a GitHub repository",
     {"repo": ("string", "The repository as owner/name"), "title": ("string", "The issue's title"),
      "body": ("string", "The issue's text, in Markdown"), "labels": ("array", "Label names to apply")}),
    ("pull_request", "pull_requests", "a pull request in a GitHub repository",
     {"repo": ("string", "The repository as owner/name"), "head": ("string", "The branch with the changes"),
      "base": ("string", "The branch to merge into"), "draft": ("boolean", "Open it as a draft")}),
    ("slack_message", "slack_messages", "a message in a Slack channel",
     {"channel": ("string", "The channel's name or id"), "text": ("string", "The message text (mrkdwn)"),
      "thread_ts": ("string", "Reply in this thread (its timestamp)")}),
    ("jira_ticket", "jira_tickets", "a ticket in a Jira project",
     {"project": ("string", "The project key, e.g. OPS"), "summary": ("string", "One line saying what it is"),
      "priority": ("string", "Highest, High, Medium, Low or Lowest"), "assignee": ("string", "Account id")}),
    ("s3_object", "s3_objects", "an object in an S3 bucket",
     {"bucket": ("string", "The bucket's name"), "key": ("string", "The object's key"),
      "content_type": ("string", "Its MIME type")}),
    ("database_table", "database_tables", "a table in the PostgreSQL database",
     {"schema": ("string", "The schema, public by default"), "table": ("string", "The table's name")}),
    ("sql_query", "sql_queries", "a saved SQL query",
     {"sql": ("string", "The query text; parameters as $1, $2"), "params": ("array", "Values for the parameters"),
      "timeout_ms": ("integer", "Give up after this many milliseconds")}),
    ("kubernetes_pod", "kubernetes_pods", "a pod in a Kubernetes cluster",
     {"namespace": ("string", "The namespace"), "name": ("string", "The pod's name"),
      "container": ("string", "One container of the pod")}),
    ("deployment", "deployments", "a Kubernetes deployment",
     {"namespace": ("string", "The namespace"), "name": ("string", "The deployment's name"),
      "replicas": ("integer", "How many pods it should run")}),
    ("invoice", "invoices", "a customer invoice in the billing system",
     {"customer_id": ("string", "The customer's id"), "amount": ("number", "The total, in the currency's units"),
      "currency": ("string", "ISO 4217 code, e.g. EUR"), "due_date": ("string", "ISO 8601 date")}),
    ("customer", "customers", "a customer record in the CRM",
     {"email": ("string", "The customer's email address"), "name": ("string", "Full name"),
      "company": ("string", "The company they work for")}),
    ("contact", "contacts", "a person in the address book",
     {"name": ("string", "Full name"), "phone": ("string", "Phone number, E.164"),
      "email": ("string", "Email address")}),
    ("email", "emails", "an email in the user's mailbox",
     {"to": ("array", "Recipients' addresses"), "subject": ("string", "The subject line"),
      "body": ("string", "Plain-text body")}),
    ("file", "files", "a file in the shared drive",
     {"path": ("string", "The file's path from the drive's root"), "content": ("string", "Text content")}),
    ("folder", "folders", "a folder in the shared drive",
     {"path": ("string", "The folder's path from the drive's root"), "recursive": ("boolean", "Include subfolders")}),
    ("wiki_page", "wiki_pages", "a page of the team wiki",
     {"space": ("string", "The wiki space"), "title": ("string", "The page's title"),
      "body": ("string", "The page's content, in Markdown")}),
    ("dashboard", "dashboards", "a Grafana dashboard",
     {"uid": ("string", "The dashboard's uid"), "folder": ("string", "The folder it is in")}),
    ("alert_rule", "alert_rules", "an alerting rule in Prometheus",
     {"name": ("string", "The rule's name"), "expr": ("string", "The PromQL expression"),
      "for_seconds": ("integer", "How long it must hold before firing")}),
    ("support_ticket", "support_tickets", "a customer support ticket in the help desk",
     {"requester": ("string", "The requester's email"), "subject": ("string", "Subject"),
      "status": ("string", "new, open, pending, solved or closed")}),
    ("product", "products", "a product in the shop's catalog",
     {"sku": ("string", "Stock keeping unit"), "price": ("number", "Price in the shop's currency"),
      "stock": ("integer", "Units in stock")}),
    ("order", "orders", "a customer order in the shop",
     {"order_id": ("string", "The order's id"), "status": ("string", "pending, paid, shipped or cancelled")}),
    ("weather_forecast", "weather_forecasts", "a weather forecast for a place",
     {"location": ("string", "A city name or lat,lon"), "days": ("integer", "How many days ahead (1-14)")}),
    ("dns_record", "dns_records", "a DNS record in a hosted zone",
     {"zone": ("string", "The zone, e.g. example.com"), "type": ("string", "A, AAAA, CNAME, TXT or MX"),
      "value": ("string", "The record's value"), "ttl": ("integer", "Time to live in seconds")}),
    ("feature_flag", "feature_flags", "a feature flag in the flag service",
     {"key": ("string", "The flag's key"), "enabled": ("boolean", "On or off"),
      "rollout": ("number", "Share of users who get it, 0 to 1")}),
]

# (verb, description template, what it takes: "id", "fields", "id+fields" or "query")
ACTIONS: list[tuple[str, str, str]] = [
    ("list", "List {plural}, newest first, with paging; each is {what}. Pass the cursor of one answer to get "
             "the next page.", "query"),
    ("get", "Get one {singular} ({what}) by its id, with all its fields.", "id"),
    ("create", "Create {what}. Returns the new {singular}'s id and a link to it.", "fields"),
    ("update", "Change fields of an existing {singular} ({what}); fields not given stay as they are.", "id+fields"),
    ("delete", "Delete {what} by its id. This cannot be undone.", "id"),
    ("search", "Search {plural} by free text and filters; answers the best matches with a short summary of each.",
     "query"),
    ("archive", "Archive {what}: it is hidden from lists but kept, and can be restored later.", "id"),
    ("export", "Export {plural} matching a filter as CSV or JSON; answers a download link valid for an hour.",
     "query"),
    ("count", "Count {plural} matching a filter, without fetching them.", "query"),
    ("watch", "Subscribe to changes of {what}; the user is notified when it changes.", "id"),
]


def _property(kind: str, description: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": kind, "description": description}
    if kind == "array":
        spec["items"] = {"type": "string"}
    return spec


def make_tools(count: int) -> list[types.Tool]:
    """``count`` tools: each action on each resource, then again with a numbered variant."""
    tools: list[types.Tool] = []
    round_ = 0
    while len(tools) < count:
        for singular, plural, what, fields in RESOURCES:
            for verb, template, takes in ACTIONS:
                if len(tools) >= count:
                    return tools
                noun = plural if takes == "query" else singular
                name = f"{verb}_{noun}" + (f"_v{round_ + 1}" if round_ else "")
                props: dict[str, Any] = {}
                required: list[str] = []
                if "id" in takes:
                    props["id"] = _property("string", f"The id of the {singular.replace('_', ' ')}")
                    required.append("id")
                if "fields" in takes:
                    props.update({k: _property(t, d) for k, (t, d) in fields.items()})
                    if takes == "fields":
                        required.append(next(iter(fields)))
                if takes == "query":
                    props["query"] = _property("string", "Free text to match, or empty for everything")
                    props["filter"] = {"type": "object", "description": "Field values to match exactly",
                                       "properties": {k: _property(t, d) for k, (t, d) in fields.items()}}
                    props["limit"] = {"type": "integer", "minimum": 1, "maximum": 100, "default": 20,
                                      "description": "At most this many items"}
                    props["cursor"] = _property("string", "Where the previous page ended")
                schema = {"type": "object", "properties": props, "required": required, "additionalProperties": False}
                described = template.format(plural=plural.replace("_", " "), singular=singular.replace("_", " "),
                                            what=what)
                tools.append(types.Tool(name=name, description=described, input_schema=schema,
                                        annotations=types.ToolAnnotations(
                                            read_only_hint=verb in ("list", "get", "search", "export", "count"),
                                            destructive_hint=verb == "delete")))
        round_ += 1
    return tools


TOOLS = make_tools(int(sys.argv[1]) if len(sys.argv) > 1 else 250)
NAMES = {t.name for t in TOOLS}


async def list_tools(ctx, params):  # type: ignore[no-untyped-def]
    return types.ListToolsResult(tools=TOOLS)


async def call_tool(ctx, params):  # type: ignore[no-untyped-def]
    if params.name not in NAMES:
        return types.CallToolResult(content=[types.TextContent(type="text", text=f"no tool {params.name}")],
                                    is_error=True)
    answer = json.dumps({"tool": params.name, "arguments": params.arguments or {}, "ok": True})
    return types.CallToolResult(content=[types.TextContent(type="text", text=answer)])


server = Server("many-tools", on_list_tools=list_tools, on_call_tool=call_tool)


async def main() -> None:
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


if __name__ == "__main__":
    anyio.run(main)
