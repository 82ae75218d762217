# Sourced by the evaluation scripts.
# manifest_subset CORPUS SUBSET: prints CORPUS/manifest.tsv's rows whose
# `subset` column is SUBSET, with `file` made absolute (the manifest reader
# takes it relative to the manifest's folder, or absolute), so the subset can
# live in a temporary file anywhere.
manifest_subset() {
  awk -F'\t' -v OFS='\t' -v dir="$1" -v want="$2" '
    NR == 1 { for (i = 1; i <= NF; i++) { if ($i == "file") f = i; if ($i == "subset") s = i }; print; next }
    $s == want { $f = dir "/" $f; print }' "$1/manifest.tsv"
}
