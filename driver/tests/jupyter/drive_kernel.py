"""Drives Spate's Jupyter kernel with jupyter_client, Jupyter's reference
client, as JupyterLab would: starts it from its kernelspec (JUPYTER_PATH),
runs cells, asks for completion, inspection and is_complete, interrupts a
long query. Prints what it saw as one JSON object for the Rust test
(driver/tests/kernel.rs) to check.

Environment: SPATE_TEST_CREATE, SPATE_TEST_QUERY, SPATE_TEST_LONG_QUERY (cells),
SPATE_TEST_UI (the master's web UI, to see the long query's tasks run).
"""

import json
import os
import sys
import time
import urllib.request

from jupyter_client.manager import start_new_kernel

TIMEOUT = 120


def reply_to(kc, msg_id):
    while True:
        reply = kc.get_shell_msg(timeout=TIMEOUT)
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply["content"]


def outputs_of(kc, msg_id):
    """The iopub outputs of a request, up to its idle status."""
    outputs = []
    while True:
        msg = kc.get_iopub_msg(timeout=TIMEOUT)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "status" and content["execution_state"] == "idle":
            return outputs
        if kind in ("execute_result", "display_data", "stream", "error"):
            outputs.append(dict(content, type=kind))


def run(kc, code):
    msg_id = kc.execute(code)
    outputs = outputs_of(kc, msg_id)
    return {"reply": reply_to(kc, msg_id), "outputs": outputs}


def slots_used(ui):
    with urllib.request.urlopen(ui + "/api/v1/workers", timeout=10) as answer:
        return sum(w["slots_used"] for w in json.load(answer))


def wait_for(what, check, limit=60):
    deadline = time.time() + limit
    while not check():
        if time.time() > deadline:
            sys.exit("timed out waiting for " + what)
        time.sleep(0.05)


def main():
    ui = os.environ["SPATE_TEST_UI"]
    km, kc = start_new_kernel(kernel_name="spate", startup_timeout=TIMEOUT)
    seen = {"kernel_info": None}
    try:
        kc.kernel_info()
        seen["kernel_info"] = kc.get_shell_msg(timeout=TIMEOUT)["content"]
        seen["create"] = run(kc, os.environ["SPATE_TEST_CREATE"])
        # A command and a statement in one cell, as a notebook has them.
        seen["query"] = run(kc, "\\set format csv\n" + os.environ["SPATE_TEST_QUERY"])
        seen["bad"] = run(kc, "SELEC 1;")

        seen["is_complete"] = {}
        for code in ["SELECT 1", "SELECT 1;", "\\jobs"]:
            seen["is_complete"][code] = reply_to(kc, kc.is_complete(code))["status"]
        code = "SELECT * FROM sal"
        seen["complete"] = reply_to(kc, kc.complete(code, len(code)))
        seen["inspect"] = reply_to(kc, kc.inspect("SELECT * FROM sales", 16))

        # A query that runs for a long time, interrupted once its tasks run.
        msg_id = kc.execute(os.environ["SPATE_TEST_LONG_QUERY"])
        wait_for("the long query's tasks to run", lambda: slots_used(ui) > 0)
        interrupted = time.time()
        km.interrupt_kernel()
        outputs = outputs_of(kc, msg_id)
        reply = reply_to(kc, msg_id)
        seconds = time.time() - interrupted
        wait_for("the long query's slots to be free", lambda: slots_used(ui) == 0)
        seen["interrupt"] = {
            "reply": reply,
            "outputs": outputs,
            "seconds": seconds,
            "free_after": time.time() - interrupted,
        }
        # The kernel goes on after an interrupt.
        seen["after"] = run(kc, "SELECT 41 + 1 AS answer;")

        # A cell starts a streaming job; another follows it until interrupted.
        seen["insert"] = run(
            kc,
            "CREATE EXTERNAL TABLE picked (id BIGINT, customer VARCHAR, revenue DOUBLE)\n"
            "STORED AS PARQUET LOCATION 'output/picked';\n"
            "INSERT INTO picked SELECT id, customer, revenue FROM sales WHERE revenue > 400;",
        )
        msg_id = kc.execute("\\tail picked")
        followed = []
        while not any(o["type"] == "display_data" for o in followed):
            msg = kc.get_iopub_msg(timeout=TIMEOUT)
            if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] in (
                "display_data",
                "stream",
            ):
                followed.append(dict(msg["content"], type=msg["msg_type"]))
        km.interrupt_kernel()
        followed += outputs_of(kc, msg_id)
        seen["tail"] = {"reply": reply_to(kc, msg_id), "outputs": followed}
        seen["stop"] = run(kc, "\\stop picked")
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)
    seen["alive_after_shutdown"] = km.is_alive()
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
