from tests.moto_server import moto_ec2, moto_server  # noqa
def test_smoke(moto_ec2, tmp_path):
    cloud = moto_ec2.cloud(tmp_path / "keys")
    h = cloud.launch("smoke-1", 2, None, region="us-east-1", zone="us-east-1b", instance_type="p4d.24xlarge", labels={"sky-dag-id": "d"})
    print(h)
    assert cloud.find("smoke-1").node_ids == h.node_ids
    cloud.terminate(h)
    assert cloud.find("smoke-1") is None
    print(moto_ec2.stats())
