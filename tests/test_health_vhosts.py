"""/api/health/checks/virtual-hosts against a real broker: it looks at the vhosts' message logs.

A vhost is down when, with a data directory, the message log of one of its
durable queues is gone (here: its directory removed under the running broker,
as a mistaken clean-up or a lost disk would).  The check then fails with 503 and
RabbitMQ's shape, the vhost's ``cluster_state`` says ``stopped``, and deleting
the broken queue brings the vhost back.
"""

from __future__ import annotations

import os
import shutil

from storage.records import read_identity
from test_management_api import Http, mgmt_url

CHECK = "/api/health/checks/virtual-hosts"


def _queue_dir(data_dir, vhost: str, queue: str) -> str:
    """The directory holding a durable queue's message log (found by its identity file)."""
    base = os.path.join(data_dir, "queues")
    for name in os.listdir(base):
        if read_identity(os.path.join(base, name)) == (vhost, queue):
            return os.path.join(base, name)
    raise AssertionError(f"no message log directory for queue '{queue}' in vhost '{vhost}'")


def _state(api: Http, vhost: str) -> str:
    (state,) = api.get(f"/api/vhosts/{vhost}").json["cluster_state"].values()
    return state


def test_a_vhost_whose_queue_log_is_gone_is_down(broker_factory):
    b = broker_factory(extra=["--management-port", "0"])
    api = Http(mgmt_url(b))
    api.ok("PUT", "/api/vhosts/other")
    api.ok("PUT", "/api/queues/%2F/kept", {"durable": True})
    api.ok("PUT", "/api/queues/%2F/transient", {"durable": False})
    api.ok("PUT", "/api/queues/other/fine", {"durable": True})
    api.ok("PUT", "/api/users/watcher", {"password": "pw", "tags": "management"})
    api.ok("PUT", "/api/permissions/other/watcher", {"configure": ".*", "write": ".*", "read": ".*"})
    watcher = api.as_user("watcher", "pw")

    r = api.get(CHECK)
    assert (r.status, r.json) == (200, {"status": "ok"})
    assert _state(api, "%2F") == _state(api, "other") == "running"

    shutil.rmtree(_queue_dir(b.data_dir, "/", "kept"))

    r = api.get(CHECK)
    assert r.status == 503
    assert r.json == {"status": "failed", "reason": "Some virtual hosts are down", "virtual-hosts": ["/"]}
    assert _state(api, "%2F") == "stopped"
    assert _state(api, "other") == "running"
    # a user without access to "/" learns that the node is unhealthy, not the vhost's name
    r = watcher.get(CHECK)
    assert (r.status, r.json["virtual-hosts"]) == (503, [])

    # deleting the queue whose log was lost brings the vhost back
    api.ok("DELETE", "/api/queues/%2F/kept")
    r = api.get(CHECK)
    assert (r.status, r.json) == (200, {"status": "ok"})
    assert _state(api, "%2F") == "running"

