"""Training on several nodes, on this one machine: two per-node launchers (the command srun runs on
each node of a multi-node job) join one torchrun rendezvous with --nnodes 2 and train the same
LoRA adapter as one node running two processes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from restyle import launch
from restyle.train import JOB_FILE, launch_job, prepare_checkpoints
from test_train import make_job, toy_records

# small enough for 2 CPU cores: 2 steps, one example per process and step
SETTINGS = {"max_steps": 2, "batch_size": 2, "per_device_batch_size": 1, "max_length": 64}


@pytest.fixture(scope="module")
def sft(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sft") / "toy.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in toy_records(8)))
    return path


def adapter(job) -> dict:
    from safetensors.torch import load_file

    return load_file(Path(job.adapter_dir) / "adapter_model.safetensors")


def test_two_nodes_of_one_process_train_what_one_node_of_two_does(tmp_path, smollm2_manifest, sft):
    import torch

    one = make_job(tmp_path / "one", smollm2_manifest, sft, cpu_processes=2, **SETTINGS)
    launch_job(one, gpus=0, cpus=2, log_path=str(tmp_path / "one.log"))

    # what launch_job does before srun, then each node's command, here both on this machine
    two = make_job(tmp_path / "two", smollm2_manifest, sft, cpu_processes=1, **SETTINGS)
    two.nodes = 2
    prepare_checkpoints(two)
    job_file = Path(two.checkpoint_dir) / JOB_FILE
    two.save(job_file)
    node = launch.node_command(["--job", str(job_file)], gpus=0, cpus=1, cpu_processes=1, nodes=2,
                               endpoint=f"127.0.0.1:{launch.free_port()}")
    logs = [tmp_path / f"node{i}.log" for i in range(2)]
    outs = [log.open("w") for log in logs]
    nodes = [subprocess.Popen(node, stdout=out, stderr=subprocess.STDOUT) for out in outs]
    try:
        codes = [p.wait(timeout=300) for p in nodes]
    finally:
        for p, out in zip(nodes, outs):
            p.kill()  # after a timeout; torchrun and the worker end with their launcher
            out.close()
    assert codes == [0, 0], "\n".join(log.read_text()[-3000:] for log in logs)
    text = [log.read_text() for log in logs]
    assert all("torch.distributed.run --nnodes=2 --nproc-per-node=1" in t for t in text)
    # one worker per node: global ranks 0 and 1 (rank 0 logs at INFO, the other warnings only)
    assert sum("[rank 0]" in t for t in text) == 1

    metrics = {name: json.loads(Path(job.metrics).read_text()) for name, job in
               (("one", one), ("two", two))}
    assert metrics["one"]["processes"] == metrics["two"]["processes"] == 2
    assert (metrics["one"]["nodes"], metrics["two"]["nodes"]) == (1, 2)
    losses = {k: [e["loss"] for e in m["loss_curve"]] for k, m in metrics.items()}
    assert len(losses["one"]) == 2 and losses["one"] == pytest.approx(losses["two"])
    assert not Path(two.checkpoint_dir).exists()  # removed once, by global rank 0
    a, b = adapter(one), adapter(two)
    assert a.keys() == b.keys() and any(v.abs().sum() > 0 for k, v in a.items() if "lora_B" in k)
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6), name
