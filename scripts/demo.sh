#!/usr/bin/env bash
# Sets everything up, then runs beacond in the foreground on 127.0.0.1:8443
# with a demo PKI (.demo/pki) and the embedded default configuration, and
# prints a curl command that uploads a file as a demo agent. Ctrl-C stops it.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

bash scripts/setup.sh
[ -f build/build.ninja ] || meson setup build >/dev/null
ninja -C build >/dev/null
bash config/demo-pki.sh .demo/pki >/dev/null
mkdir -p .demo/data .demo/download
[ -f .demo/download/policy.xml ] ||
  printf '<policy version="1"><schedule>daily</schedule></policy>\n' > .demo/download/policy.xml

cat <<MSG

beacond demo: https://127.0.0.1:8443 (mutual TLS; demo PKI in .demo/pki)

Upload a file as the demo agent agent1.example (expect HTTP 201):

  curl --cacert .demo/pki/server-ca.pem --cert .demo/pki/agent1.pem --key .demo/pki/agent1.key \\
       -T README.md https://127.0.0.1:8443/ManageSoftRL/Inventories/readme.ndi -w '%{http_code}\\n'

Read it back from the store:

  build/beaconctl --data-dir .demo/data uploads list
  build/beaconctl --data-dir .demo/data uploads get 1

Download a policy file:

  curl --cacert .demo/pki/server-ca.pem --cert .demo/pki/agent1.pem --key .demo/pki/agent1.key \\
       https://127.0.0.1:8443/ManageSoftDL/policy.xml

MSG
exec build/beacond
