# `nix build .#kbs-image`: an OCI image of the KBS for deploy/kbs.yaml, loaded with
# `docker load < result` (or `kind load image-archive result`, `ctr images import`).
# The KBS runs as the unprivileged user 65532 (the Deployment's runAsUser); the image
# carries kbs-client for `kubectl exec` administration and the default resource
# policy (deploy/kbs/default-policy.rego), which the KBS itself also builds in.
{ lib, dockerTools, runCommand, workspace }:

let
  uid = 65532;

  # /etc/passwd and /etc/group so the user has a name, and the default policy.
  files = runCommand "coco-kbs-image-files" { } ''
    mkdir -p $out/etc $out/share/coco-kbs
    echo 'kbs:x:${toString uid}:${toString uid}:coco KBS:/var/lib/coco-kbs:/sbin/nologin' > $out/etc/passwd
    echo 'kbs:x:${toString uid}:' > $out/etc/group
    cp ${../deploy/kbs/default-policy.rego} $out/share/coco-kbs/default-policy.rego
  '';
in
dockerTools.buildLayeredImage {
  name = "coco-kbs";
  # A fixed tag (the crate version) so deploy/kbs.yaml can name the loaded image.
  tag = workspace.version;
  contents = [ files ];

  # The state directory must be writable by the KBS user even without a volume.
  fakeRootCommands = ''
    mkdir -p ./var/lib/coco-kbs ./etc/coco-kbs ./tmp
    chown ${toString uid}:${toString uid} ./var/lib/coco-kbs
    chmod 1777 ./tmp
  '';

  config = {
    User = "${toString uid}:${toString uid}";
    Entrypoint = [ "${workspace}/bin/kbs" ];
    Cmd = [ "--config" "/etc/coco-kbs/kbs.toml" ];
    Env = [ "PATH=${lib.makeBinPath [ workspace ]}" ];
    WorkingDir = "/var/lib/coco-kbs";
    ExposedPorts."8080/tcp" = { };
    Volumes."/var/lib/coco-kbs" = { };
  };
}
