#!/bin/sh
# Install JIP from the offline bundle (make offline-bundle), with no internet access.
#
#   ./install.sh registry.hospital.local:5000 [helm upgrade flags...]
#       push JIP's images into the site's registry, then install the chart from it;
#   ./install.sh --containerd [helm upgrade flags...]
#       one-node clusters without a registry: import the images into containerd's
#       k8s.io namespace (ctr), then install the chart.
#
# The third-party images in external-images.txt (PostgreSQL, MinIO, OpenSearch, Keycloak)
# are not in the bundle: mirror them into the same registry first, or switch those parts
# off (`--set postgresql.enabled=false` ...) and point the chart at the hospital's own.
# Needs helm, and skopeo (registry) or ctr (containerd).
set -eu
cd "$(dirname "$0")"

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
[ $# -ge 1 ] || usage 2
case "$1" in -h|--help) usage 0 ;; esac
target=$1; shift
namespace=${JIP_NAMESPACE:-jip}
version=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' chart/jip/Chart.yaml)

if [ "$target" = "--containerd" ]; then
    echo "install: importing $(wc -l < images.txt) images into containerd (k8s.io)"
    ctr -n k8s.io images import --all-platforms images.tar
    registry="localhost/"  # the archive's names: localhost/jip/<name>:<version>
    lock=""  # containerd keeps the archive's tags: nothing to pin by
else
    registry="${target%/}/"
    echo "install: pushing $(wc -l < images.txt) images to $registry"
    # images.json: the registry's digests, in build/images.json's shape, for workflows
    # that pin operator images (jip.flow.worker.pod_operator.OperatorManifest.pinned).
    sep=""
    printf '{"registry": "%s", "images": {' "$registry" > images.json
    while read -r ref; do
        skopeo copy --quiet "docker-archive:images.tar:localhost/$ref" "docker://$registry$ref"
        digest=$(skopeo inspect --format '{{.Digest}}' "docker://$registry$ref")
        echo "  $registry$ref@$digest"
        printf '%s"%s": {"digest": "%s"}' "$sep" "$ref" "$digest" >> images.json
        sep=", "
    done < images.txt
    echo "}}" >> images.json
    lock="operators.imageLock=images.json"  # operator pods start these digests
fi

echo "install: the site provides these (external-images.txt):"
sed 's/^/  /' external-images.txt
helm upgrade --install jip chart/jip --namespace "$namespace" --create-namespace \
    --set "images.jip.repository=${registry}jip/jip" --set "images.jip.tag=$version" \
    --set "images.airflow.repository=${registry}jip/airflow" --set "images.airflow.tag=$version" \
    --set "operators.imageRegistry=$registry" \
    ${lock:+--set-file "$lock"} \
    "$@"
