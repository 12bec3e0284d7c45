-- Anomaly detection on the synthetic corpus, side by side: machrt's DCASE
-- 2020 Task 2 baseline (experiments/anomaly.lua --anomaly.method=autoencoder)
-- and the same baseline in PyTorch (bench/peers/dcase_baseline.py), on the
-- same split (the peer's, written as a fold column), the same epochs and
-- the same threads: AUC and pAUC per machine type and model id, and the
-- seconds of each. Run through `make bench`.
--
--   ./machrt bench/anomaly_peer.lua [--epochs N] [--threads N] [--data FOLDER]
--
-- The corpus is the default one (data/synthetic, made on first use, as the
-- experiments make it). The peer runs under $PEERS_PYTHON, else $PYTHON,
-- else python3; without torch, torchaudio and scikit-learn there only
-- machrt runs (the split needs python3 alone). 100 epochs is the baseline's
-- own setting (minutes per type and side on 2 cores); --epochs or
-- $BENCH_DCASE_EPOCHS gives a quicker, rougher figure. pAUC is McClish's
-- (scikit-learn's max_fpr = 0.1), the peer's definition, on both sides.
-- On a busy machine, OMP_WAIT_POLICY=passive keeps either side's OpenMP
-- threads from spinning against the other work (the value is printed).
local mt = require "machrt"
local sys = require "machrt.sys"
local synth = require "machrt.synth"
local csv = require "machrt.data.csv"
local cpuinfo = require "machrt.cpuinfo"

local epochs = tonumber(os.getenv("BENCH_DCASE_EPOCHS") or "") or 100
local threads, data = 2, "data/synthetic"
local function positive(name, v)
    local n = math.tointeger(tonumber(v or ""))
    if not n or n < 1 then error(("anomaly_peer: %s needs a positive integer"):format(name), 0) end
    return n
end
local i = 1
while i <= #arg do
    if arg[i] == "--epochs" then
        epochs, i = positive("--epochs", arg[i + 1]), i + 2
    elseif arg[i] == "--threads" then
        threads, i = positive("--threads", arg[i + 1]), i + 2
    elseif arg[i] == "--data" and arg[i + 1] then
        data, i = arg[i + 1], i + 2
    else
        error("anomaly_peer: unknown argument '" .. tostring(arg[i])
              .. "' (--epochs N, --threads N, --data FOLDER)", 0)
    end
end

local model, isa = cpuinfo.cpu()
print(("cpu: %s; flags: %s; %d threads each side; OMP_WAIT_POLICY=%s; load %s"):format(model,
    isa, threads, os.getenv("OMP_WAIT_POLICY") or "(unset)", cpuinfo.loadavg()))

local python = os.getenv("PEERS_PYTHON") or os.getenv("PYTHON") or "python3"
if not os.execute(("%s -c 'import csv' >/dev/null 2>&1"):format(python)) then
    print(("skipped: %s cannot run (the split is the peer's, written by Python)"):format(python))
    return
end
local has_peer = os.execute(("%s -c 'import torch, torchaudio, sklearn' >/dev/null 2>&1"):format(python))

local info = synth.ensure(data)
local out = "build/bench"
sys.mkdir(out)
local folds = out .. "/dcase_holdout.csv"
local function run(cmd, what)
    local t = mt.clock()
    if not os.execute(cmd) then error("anomaly_peer: " .. what .. " failed: " .. cmd, 0) end
    return mt.clock() - t
end
run(("%s bench/peers/dcase_baseline.py --data %s --write-folds %s >/dev/null"):format(python, data, folds),
    "writing the peer's split")

-- machrt: fold 0 of the peer's split is its test part.
local name = "bench_dcase_autoencoder"
local machrt_log = out .. "/anomaly_machrt.log"
local machrt_seconds = run(("./machrt experiments/anomaly.lua --anomaly.method=autoencoder "
    .. "--dataset.data_folder=%s --dataset.train_dataframe=%s --dataset.folds=0 --autoencoder.epochs=%d "
    .. "--environment.threads=%d --environment.seed=1 --experiment_name=%s --output_directory=%s/runs "
    .. "--training.run_interpretations=false --training.build_scoring_pipelines=false --overwrite >%s 2>&1")
    :format(data, folds, epochs, threads, name, out, machrt_log), "machrt's autoencoder (log: " .. machrt_log .. ")")
local run_dir = ("%s/runs/%s/fold0"):format(out, name)
local function read_json(path)
    local h = assert(io.open(path, "rb"))
    local text = h:read("a")
    h:close()
    return sys.json_decode(text, path)
end
local ours = read_json(run_dir .. "/metrics.json").alternatives.reconstruction
local function training_seconds(machine_type)
    local df = csv.read(("%s/autoencoder_%s/log.csv"):format(run_dir, machine_type:gsub("[^%w_.-]", "_")))
    local s = 0
    for _, v in ipairs(df:column("seconds")) do s = s + tonumber(v) end
    return s
end

local peer, peer_json = nil, out .. "/dcase_baseline.json"
if has_peer then
    run(("%s bench/peers/dcase_baseline.py --data %s --epochs %d --threads %d --quiet --json %s >/dev/null")
        :format(python, data, epochs, threads, peer_json), "the PyTorch peer")
    peer = read_json(peer_json)
else
    print(("peer skipped: %s cannot import torch, torchaudio and scikit-learn (set PEERS_PYTHON)"):format(python))
end

print(("DCASE 2020 baseline autoencoder, %d epochs, on %s split as %s (fold 0 = the peer's test part)")
    :format(epochs, info.data_folder, folds))
print(("%-8s %6s  %13s  %13s  %s"):format("", "", "machrt", "PyTorch", "training seconds"))
print(("%-8s %6s  %6s %6s  %6s %6s  %7s %7s"):format("type", "id", "AUC", "pAUC", "AUC", "pAUC", "machrt", "PyTorch"))
local function num(v) return v and v == v and ("%6.3f"):format(v) or ("%6s"):format("-") end
for _, t in ipairs(ours.types) do
    local pt = peer and peer.types[t]
    for _, m in ipairs(ours.machines) do
        local id = m:match("^" .. t:gsub("%p", "%%%0") .. "/id_(.*)$")
        if id then
            local a, b = ours.per_machine[m], pt and pt.ids[id]
            print(("%-8s %6s  %s %s  %s %s"):format(t, id, num(a.auc), num(a.pauc_mcclish),
                num(b and b.auc), num(b and b.pauc)))
        end
    end
    local a = ours.per_type[t]
    print(("%-8s %6s  %s %s  %s %s  %7.1f %7s"):format(t, "all", num(a.auc), num(a.pauc_mcclish),
        num(pt and pt.auc), num(pt and pt.pauc), training_seconds(t),
        pt and ("%7.1f"):format(pt.seconds_training) or "-"))
end
local function mean_of(per, key)
    local s, n = 0, 0
    for _, v in pairs(per) do if v[key] and v[key] == v[key] then s, n = s + v[key], n + 1 end end
    return n > 0 and s / n or nil
end
print(("%-8s %6s  %s %s  %s %s"):format("mean", "types", num(mean_of(ours.per_type, "auc")),
    num(mean_of(ours.per_type, "pauc_mcclish")), num(peer and mean_of(peer.types, "auc")),
    num(peer and mean_of(peer.types, "pauc"))))
print(("wall seconds, everything (corpus read, features, training, scoring): machrt %.1f%s; load %s")
    :format(machrt_seconds, peer and (", PyTorch %.1f"):format(peer.seconds) or "", cpuinfo.loadavg()))
