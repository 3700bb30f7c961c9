"""The local Apache Kafka's own choices, without starting it."""

from __future__ import annotations


def test_local_kafka_cluster_ids_never_read_as_an_option() -> None:
    from refit.kafka_local import _cluster_id

    ids = [_cluster_id() for _ in range(5000)]  # 1 in 64 random ids starts with "-"
    assert len(set(ids)) == 5000 and all(len(i) == 22 and not i.startswith("-") for i in ids)
