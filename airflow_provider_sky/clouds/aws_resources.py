"""Per-region EC2 prerequisites created on demand: SSH key pair, SSH-only security group, image lookup.

Each helper is idempotent (looks first, creates when missing, tolerates a concurrent creator) and
tags what it creates with ``sky-managed-by`` so the reaper can tell it apart from user resources.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

from airflow_provider_sky.clouds.aws_errors import AWS, error_code
from airflow_provider_sky.clouds.errors import ConfigError

MANAGED_BY_KEY = "sky-managed-by"
MANAGED_BY = "airflow-provider-sky"
_ARM_FAMILY = re.compile(r"^[a-z]+\d+([a-z-]*)\.")


def default_key_dir() -> Path:
    """``$SKY_KEY_DIR``, else ``$AIRFLOW_HOME/sky/keys``, else ``~/.sky-airflow/keys``."""
    if os.environ.get("SKY_KEY_DIR"):
        return Path(os.environ["SKY_KEY_DIR"]).expanduser()
    if os.environ.get("AIRFLOW_HOME"):
        return Path(os.environ["AIRFLOW_HOME"]).expanduser() / "sky" / "keys"
    return Path.home() / ".sky-airflow" / "keys"


def ensure_local_key(key_dir: Path, name: str = "sky-key") -> tuple[Path, bytes]:
    """Create (once) an ed25519 key pair under `key_dir`; return (private key path, OpenSSH public key)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    private = key_dir / name
    public = key_dir / f"{name}.pub"
    if not private.exists():
        pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
        tmp = key_dir / f".{name}.tmp{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        try:
            os.link(tmp, private)  # first writer wins; a concurrent one keeps the existing key
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    if not public.exists():
        key = serialization.load_ssh_private_key(private.read_bytes(), password=None)
        pub = key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        public.write_bytes(pub + b"\n")
    return private, public.read_bytes().strip()


def key_pair_name(public_key: bytes, prefix: str = "sky-key") -> str:
    """A key-pair name bound to the key material, so two machines with different keys never collide."""
    return f"{prefix}-{hashlib.sha256(public_key).hexdigest()[:12]}"


def managed_tags(extra: dict[str, str] | None = None) -> list[dict[str, str]]:
    tags = {MANAGED_BY_KEY: MANAGED_BY, **(extra or {})}
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def ensure_key_pair(client: Any, name: str, public_key: bytes) -> str:
    """Import the public key as EC2 key pair `name` unless it exists; return the name."""
    try:
        client.describe_key_pairs(KeyNames=[name])
        return name
    except Exception as exc:
        if error_code(exc) != "InvalidKeyPair.NotFound":
            raise
    try:
        client.import_key_pair(
            KeyName=name,
            PublicKeyMaterial=public_key,
            TagSpecifications=[{"ResourceType": "key-pair", "Tags": managed_tags()}],
        )
    except Exception as exc:
        if error_code(exc) != "InvalidKeyPair.Duplicate":
            raise
    return name


def default_vpc_id(client: Any, region: str) -> str:
    vpcs = client.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    if not vpcs:
        raise ConfigError(
            f"region {region} has no default VPC",
            cloud=AWS,
            region=region,
            fix="create one (aws ec2 create-default-vpc) or set vpc_id in the aws settings",
        )
    return vpcs[0]["VpcId"]


def ensure_security_group(
    client: Any, name: str, vpc_id: str, ssh_cidrs: tuple[str, ...], port: int = 22
) -> str:
    """The id of security group `name` in `vpc_id` allowing TCP `port` (SSH) from `ssh_cidrs`; created
    once. An existing group gets the rule for `port` added when it lacks it."""
    filters = [{"Name": "group-name", "Values": [name]}, {"Name": "vpc-id", "Values": [vpc_id]}]
    groups = client.describe_security_groups(Filters=filters)["SecurityGroups"]
    if groups:
        if not _allows(groups[0], port, ssh_cidrs):
            ensure_ingress(client, groups[0]["GroupId"], [(port, port)], ssh_cidrs, "sky ssh")
        return groups[0]["GroupId"]
    try:
        group_id = client.create_security_group(
            GroupName=name,
            Description="airflow-provider-sky: SSH ingress only",
            VpcId=vpc_id,
            TagSpecifications=[{"ResourceType": "security-group", "Tags": managed_tags()}],
        )["GroupId"]
    except Exception as exc:
        if error_code(exc) != "InvalidGroup.Duplicate":
            raise
        return client.describe_security_groups(Filters=filters)["SecurityGroups"][0]["GroupId"]
    ensure_ingress(client, group_id, [(port, port)], ssh_cidrs, "sky ssh")
    return group_id


def _allows(group: dict[str, Any], port: int, cidrs: tuple[str, ...]) -> bool:
    for perm in group.get("IpPermissions") or ():
        covers = perm.get("IpProtocol") == "-1" or (
            perm.get("IpProtocol") == "tcp" and perm.get("FromPort", 0) <= port <= perm.get("ToPort", 65535)
        )
        if covers and set(cidrs) <= {r.get("CidrIp") for r in perm.get("IpRanges") or ()}:
            return True
    return False


def ensure_ingress(
    client: Any, group_id: str, ranges: list[tuple[int, int]], cidrs: tuple[str, ...], description: str
) -> None:
    """Allow TCP `ranges` (inclusive (from, to) pairs) from `cidrs`; rules that exist are skipped."""
    for low, high in ranges:
        try:
            client.authorize_security_group_ingress(
                GroupId=group_id,
                IpPermissions=[
                    {
                        "IpProtocol": "tcp",
                        "FromPort": low,
                        "ToPort": high,
                        "IpRanges": [{"CidrIp": cidr, "Description": description} for cidr in cidrs],
                    }
                ],
            )
        except Exception as exc:
            if error_code(exc) != "InvalidPermission.Duplicate":
                raise


def port_ranges(ports: tuple[str, ...] | list[str]) -> list[tuple[int, int]]:
    """``('8080', '10000-10010')`` (as `spec.ports` normalizes them) -> ``[(8080, 8080), (10000, 10010)]``."""
    out = []
    for spec in ports:
        low, _, high = str(spec).partition("-")
        out.append((int(low), int(high or low)))
    return out


def architecture_of(instance_type: str) -> str:
    """``arm64`` for Graviton families (m7g, c6gn, g5g, t4g ...), else ``x86_64``."""
    match = _ARM_FAMILY.match(instance_type)
    return "arm64" if match and "g" in match.group(1) else "x86_64"


def find_image(
    client: Any, name_pattern: str, owners: tuple[str, ...], architecture: str
) -> dict[str, Any] | None:
    """The newest available image whose name matches `name_pattern` (EC2 wildcard) among `owners`."""
    images = client.describe_images(
        Owners=list(owners),
        Filters=[
            {"Name": "name", "Values": [name_pattern]},
            {"Name": "state", "Values": ["available"]},
            {"Name": "architecture", "Values": [architecture]},
        ],
    )["Images"]
    if not images:
        return None
    return max(images, key=lambda img: (img.get("CreationDate") or "", img["ImageId"]))


def describe_image(client: Any, image_id: str) -> dict[str, Any] | None:
    images = client.describe_images(ImageIds=[image_id])["Images"]
    return images[0] if images else None
