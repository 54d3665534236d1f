"""Client.watch across a coordinator restart: the coordinator is SIGKILLed while a job trains and
a watch is attached, then restarted on the same port and state; the same iterator carries on
(re-attaching by sequence number) and sees every event exactly once, up to SUCCEEDED."""
import os
import time

from service import Coordinator, Worker, build_dataset, wait_for_workers
from trm_client import Client, MetricsEvent, StateEvent


def test_watch_survives_a_coordinator_restart(tmp_path):
    root = str(tmp_path)
    dataset = build_dataset(os.path.join(root, "example-chat"))
    coord = Coordinator(os.path.join(root, "coord"))
    worker = None
    client = Client(coord.address, timeout=10)
    try:
        worker = Worker(coord.address, "w1", os.path.join(root, "w1"))
        wait_for_workers(client, 1)
        client.push_dataset(dataset)
        job = client.submit("cfg_tiny", dataset="example-chat",
                            overrides={"max_steps": 60, "checkpoint_interval_steps": 10, "eval_interval": 0,
                                       "threads": 1, "log_interval": 10})
        seen, restarted, down_s = [], False, 0.0
        for ev in client.watch(job.id, include_logs=True, reconnect_s=120):
            seen.append(ev)
            if not restarted and isinstance(ev, MetricsEvent) and ev.step >= 12:
                t = time.monotonic()
                coord.kill()
                time.sleep(1.0)
                coord.start()
                down_s = time.monotonic() - t
                restarted = True
        assert restarted, "the job ended before the restart"
        assert down_s >= 1.0
        final = seen[-1]
        assert isinstance(final, StateEvent) and final.state.value == "SUCCEEDED", final
        seqs = [e.seq for e in seen]
        assert seqs == list(range(1, len(seqs) + 1))
        # What the watcher saw across the restart is the job's whole stored history.
        assert list(client.watch(job.id, include_logs=True)) == seen
        assert client.job(job.id).step == 60
    finally:
        client.close()
        if worker:
            worker.stop()
        coord.stop()
