"""The local multi-node cluster's helpers (rec_core.run.local_cluster) without starting Ray."""

import subprocess

import pytest

from rec_core.run.local_cluster import LocalCluster, free_ports, wait_for


def test_a_nodes_ports_are_distinct():
    # a CI run lost a node to Ray refusing two components on one port: ports taken one at a time repeat
    for _ in range(20):
        ports = free_ports(7)
        assert len(set(ports)) == 7
    flags = LocalCluster.own_ports()
    assert len({flag.split("=")[1] for flag in flags}) == 4
    assert LocalCluster.own_ports([1, 2, 3, 4])[2] == "--metrics-export-port=3"


def test_waiting_for_a_node_whose_ray_start_exited_fails_at_once(tmp_path):
    exited = subprocess.Popen(["false"])
    exited.wait()
    polls = []
    with pytest.raises(RuntimeError, match=r"`ray start` exited with 1 while waiting for the new node"):
        wait_for(lambda: polls.append(1) and False, 120, "the new node", exited, tmp_path / "nodes.log")
    assert len(polls) == 1  # not 60 polls over the 120 s
    with pytest.raises(TimeoutError, match="timed out after 0 s waiting for the head"):
        wait_for(lambda: False, 0, "the head")
