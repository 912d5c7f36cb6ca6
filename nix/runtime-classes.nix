# One source of truth for the RuntimeClass names, the Kata handlers they map to and the
# Kata configuration file each handler loads. deploy/runtimeclasses.yaml and the README
# repeat these names; deploy-tests/tests/names.rs keeps them in step.
{
  kata-coco-snp = {
    handler = "kata-coco-snp";
    config = "configuration-coco-snp.toml";
    tee = "snp";
  };
  kata-coco-tdx = {
    handler = "kata-coco-tdx";
    config = "configuration-coco-tdx.toml";
    tee = "tdx";
  };
  # No TEE: for development on machines without SNP/TDX. Nothing it runs is protected.
  kata-coco-dev-insecure = {
    handler = "kata-coco-dev-insecure";
    config = "configuration-coco-dev-insecure.toml";
    tee = "none";
  };
}
