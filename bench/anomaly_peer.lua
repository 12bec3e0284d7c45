-- Anomaly detection on the synthetic corpus: the DCASE 2020 Task 2 baseline
-- in PyTorch (bench/peers/dcase_baseline.py), AUC and pAUC per machine type
-- and model id, and its wall time on this machine's threads. Run through
-- `make bench`.
--
--   ./machrt bench/anomaly_peer.lua [--epochs N] [--data FOLDER]
--
-- The corpus is the default one (data/synthetic, made on first use, as the
-- experiments make it). The peer runs under $PEERS_PYTHON, else $PYTHON,
-- else python3; without torch, torchaudio and scikit-learn there it says so
-- and the benchmark is skipped. 100 epochs is the baseline's own setting
-- (3 to 6 minutes per type, 15 in all, on 2 busy cores); --epochs or
-- $BENCH_DCASE_EPOCHS gives a quicker, rougher figure.
local mt = require "machrt"
local synth = require "machrt.synth"

local epochs = tonumber(os.getenv("BENCH_DCASE_EPOCHS") or "") or 100
local data = "data/synthetic"
local i = 1
while i <= #arg do
    if arg[i] == "--epochs" then
        epochs = math.tointeger(tonumber(arg[i + 1] or ""))
        if not epochs or epochs < 1 then error("anomaly_peer: --epochs needs a positive integer", 0) end
        i = i + 2
    elseif arg[i] == "--data" and arg[i + 1] then
        data = arg[i + 1]
        i = i + 2
    else
        error("anomaly_peer: unknown argument '" .. tostring(arg[i]) .. "' (--epochs N, --data FOLDER)", 0)
    end
end

-- The CPU's model and the vector extensions the kernels can use.
local model, flags = "unknown", {}
local f = io.open("/proc/cpuinfo", "r")
if f then
    for line in f:lines() do
        local m = line:match("^model name%s*:%s*(.-)%s*$")
        if m and model == "unknown" then model = m end
        local fl = line:match("^flags%s*:%s*(.*)$")
        if fl and #flags == 0 then
            for w in fl:gmatch("%S+") do
                if w:match("^avx") or w == "fma" or w == "f16c" or w:match("^sse4") or w == "amx_tile" then
                    flags[#flags + 1] = w
                end
            end
        end
    end
    f:close()
end
print(("cpu: %s; flags: %s; machrt threads: %d"):format(model, table.concat(flags, " "),
    mt.get_num_threads()))

local python = os.getenv("PEERS_PYTHON") or os.getenv("PYTHON") or "python3"
local probe = os.execute(("%s -c 'import torch, torchaudio, sklearn' >/dev/null 2>&1"):format(python))
if not probe then
    print(("skipped: %s cannot import torch, torchaudio and scikit-learn "
        .. "(set PEERS_PYTHON to a Python that can)"):format(python))
    return
end

local info = synth.ensure(data)
local json = "build/bench/dcase_baseline.json"
local cmd = ("%s bench/peers/dcase_baseline.py --data %s --epochs %d --threads 2 --quiet --json %s")
    :format(python, data, epochs, json)
print(("DCASE 2020 baseline (PyTorch, 2 threads, %d epochs) on %s; figures also in %s"):format(
    epochs, info.data_folder, json))
local ok = os.execute(cmd)
if not ok then error("anomaly_peer: the peer failed: " .. cmd, 0) end
