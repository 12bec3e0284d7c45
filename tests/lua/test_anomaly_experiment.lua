-- End-to-end runs of experiments/anomaly.lua as a user starts it (a child
-- process) on a tiny synthetic corpus (2 machine types x 2 model ids):
-- outputs of both detectors, kill-and-resume equality, and the bad inputs
-- (no normal clip, a machine with one normal clip, no abnormal validation
-- clip, CSVs without model_id or condition).

local A = require "assert"
local mt = require "machrt"
local sys = require "machrt.sys"

local F = require "files"
local tests, test, make_tmpdir = F.suite()
local read, exists = F.read, F.exists

local function tmpdir() return make_tmpdir{ create = false } end

local corpus
local function tiny_corpus()
    if not corpus then
        corpus = make_tmpdir{ create = false, keep = true }
        require("machrt.synth").generate(corpus, { clips = 48, seed = 5, types = { "fan", "pump" },
                                                   ids = { 0, 2 }, abnormal_fraction = 0.3 })
    end
    return corpus
end

local function common_args(data, out, csv)
    return table.concat({
        "--dataset.data_folder=" .. data, "--dataset.train_dataframe=" .. (csv or data .. "/dataset.csv"),
        "--architecture.backbone=resnet18", "--architecture.width=4", "--training.batch_size=8",
        "--training.epochs=2", "--environment.number_of_workers=2", "--environment.seed=11",
        "--environment.threads=1", "--output_directory=" .. out,
    }, " ")
end

local function run(args, env)
    return F.run(string.format("%s ./machrt experiments/anomaly.lua %s", env or "", args))
end

local function fold_dir(out) return out .. "/anomaly_detection/fold4" end

-- A copy of the corpus CSV keeping the rows keep(cells) accepts (cells:
-- index, audio, label, model_id, condition, snr_db); drop names columns to leave out.
local function csv_variant(data, keep, drop)
    local rows = F.csv_rows(data .. "/dataset.csv")
    local header, out = rows[1], {}
    local keep_col = {}
    for c, name in ipairs(header) do keep_col[c] = not (drop and drop[name]) end
    local function line(r)
        local cells = {}
        for c = 1, #header do if keep_col[c] then cells[#cells + 1] = r[c] end end
        return table.concat(cells, ",")
    end
    out[1] = line(header)
    for i = 2, #rows do if keep(rows[i]) then out[#out + 1] = line(rows[i]) end end
    local path = make_tmpdir{ create = false } .. ".csv"
    sys.write_file(path, table.concat(out, "\n") .. "\n")
    return path
end

test("an embedding run writes val_scores.csv, metrics.json with AUC and pAUC, and thresholds", function()
    local data, out = tiny_corpus(), tmpdir()
    local code, text = run(common_args(data, out))
    A.eq(code, 0, "exit status; output:\n" .. text)
    local dir = fold_dir(out)
    A.truthy(text:find("abnormal clips left out", 1, true), "the left-out abnormal clips are counted")
    for _, f in ipairs{ "config.json", "log.csv", "checkpoint.safetensors", "val_scores.csv", "metrics.json" } do
        A.truthy(exists(dir .. "/" .. f), f .. " missing; output:\n" .. text)
    end
    local rows = F.csv_rows(dir .. "/val_scores.csv")
    A.eq(table.concat(rows[1], ","), "audio,label,model_id,condition,anomaly_score,is_anomaly")
    A.truthy(#rows > 2, "validation clips scored")
    for i = 2, #rows do
        A.truthy(tonumber(rows[i][5]), "anomaly_score is a number: " .. rows[i][5])
        A.truthy(rows[i][6] == "true" or rows[i][6] == "false", "is_anomaly is a boolean")
        A.truthy(rows[i][4] == "normal" or rows[i][4] == "abnormal")
    end
    local m = sys.json_decode(read(dir .. "/metrics.json"))
    A.eq(m.method, "embedding")
    A.eq(m.score, "mahalanobis")
    A.eq(#m.evaluation.machines, 4)
    for _, name in ipairs{ "mahalanobis", "cosine", "nll" } do A.truthy(m.alternatives[name], name) end
    for _, machine in ipairs(m.evaluation.machines) do
        local r = m.evaluation.per_machine[machine]
        A.truthy(r.auc or r.undefined, machine .. ": an AUC or the reason it has none")
        if r.auc then A.truthy(r.pauc >= 0 and r.pauc <= 1 and r.pauc_mcclish >= 0, machine .. " pauc") end
        A.truthy(type(m.thresholds[machine]) == "number", machine .. " threshold")
        A.truthy(m.best_score_per_machine[machine] or r.undefined, machine .. ": the winning score")
    end
    A.truthy(m.evaluation.per_type.fan and m.evaluation.per_type.pump, "per machine type")
end)

test("the autoencoder detector trains one model per machine type and scores every clip", function()
    local data, out = tiny_corpus(), tmpdir()
    local code, text = run(common_args(data, out) .. " --anomaly.method=autoencoder --autoencoder.epochs=1"
                           .. " --autoencoder.hidden=16")
    A.eq(code, 0, "exit status; output:\n" .. text)
    local dir = fold_dir(out)
    A.truthy(exists(dir .. "/autoencoder_fan/checkpoint.safetensors"), "fan model")
    A.truthy(exists(dir .. "/autoencoder_pump/checkpoint.safetensors"), "pump model")
    local m = sys.json_decode(read(dir .. "/metrics.json"))
    A.eq(m.method, "autoencoder")
    A.eq(m.score, "reconstruction")
    local rows = F.csv_rows(dir .. "/val_scores.csv")
    for i = 2, #rows do A.truthy(tonumber(rows[i][5]) > 0, "a reconstruction error") end
end)

test("a killed anomaly run resumes to the same weights and scores, bit for bit", function()
    local data = tiny_corpus()
    local a, b = tmpdir(), tmpdir()
    local code, text = run(common_args(data, a))
    A.eq(code, 0, "uninterrupted run; output:\n" .. text)
    -- 28 normal training clips in batches of 8 (drop_last): 3 steps per epoch;
    -- the kill comes after step 4, in epoch 2, with the epoch-1 checkpoint on disk.
    code, text = run(common_args(data, b), "MACHRT_KILL_AT_STEP=4")
    A.truthy(code ~= 0, "the killed run must not exit cleanly")
    A.truthy(not exists(fold_dir(b) .. "/val_scores.csv"), "killed before scoring")
    code, text = run("--resume " .. fold_dir(b) .. " --environment.number_of_workers=3")
    A.eq(code, 0, "resumed run; output:\n" .. text)
    A.truthy(text:find("resuming"), "the resumed run says so")
    local ta, tb = mt.load(fold_dir(a) .. "/checkpoint.safetensors"), mt.load(fold_dir(b) .. "/checkpoint.safetensors")
    local n = 0
    for name, x in pairs(ta) do
        A.truthy(tb[name], name .. " missing after resume")
        if x:numel() > 0 then A.eq((x:float() - tb[name]:float()):abs():max(), 0, name) end
        n = n + 1
    end
    A.truthy(n > 50, "tensors compared: " .. n)
    A.eq(read(fold_dir(b) .. "/val_scores.csv"), read(fold_dir(a) .. "/val_scores.csv"))
end)

test("training data without a normal clip is refused", function()
    local data, out = tiny_corpus(), tmpdir()
    local csv = csv_variant(data, function(r) return r[5] == "abnormal" end)
    local code, text = run(common_args(data, out, csv))
    A.truthy(code ~= 0, "must fail")
    A.truthy(text:find("no normal clip to train on", 1, true), text)
end)

test("a machine with a single normal clip: a clear error for Mahalanobis, a fallback for cosine", function()
    local data, out = tiny_corpus(), tmpdir()
    local seen = false
    local csv = csv_variant(data, function(r)
        if r[3] == "fan" and r[4] == "02" and r[5] == "normal" then
            if seen then return false end
            seen = true
        end
        return true
    end)
    local val = csv_variant(data, function(r) return r[5] == "abnormal" or r[4] == "00" end)
    local args = common_args(data, out, csv) .. " --dataset.validation_dataframe=" .. val
    local code, text = run(args)
    A.truthy(code ~= 0, "must fail")
    A.truthy(text:find("machine fan/id_02 has a single normal training clip", 1, true), text)
    code, text = run(args:gsub(out, tmpdir()) .. " --anomaly.score=cosine")
    A.eq(code, 0, "cosine needs only the mean; output:\n" .. text)
    A.truthy(text:find("no Mahalanobis score for it", 1, true), text)
end)

test("a validation set without abnormal clips has no AUC, and says so", function()
    local data, out = tiny_corpus(), tmpdir()
    local val = csv_variant(data, function(r) return r[5] == "normal" end)
    local code, text = run(common_args(data, out) .. " --dataset.validation_dataframe=" .. val)
    A.eq(code, 0, "output:\n" .. text)
    A.truthy(text:find("AUC undefined for fan/id_00: no abnormal clip", 1, true), text)
    A.truthy(text:find("AUC is undefined", 1, true), text)
    local m = sys.json_decode(read(fold_dir(out) .. "/metrics.json"))
    A.eq(m.evaluation.mean_auc, nil)
    A.eq(m.evaluation.per_machine["fan/id_00"].auc, nil)
    A.eq(m.evaluation.per_machine["fan/id_00"].undefined, "no abnormal clip")
    A.truthy(not read(fold_dir(out) .. "/metrics.json"):find("0.5,", 1, true), "no AUC of 0.5 stands in")
end)

test("CSVs without model_id or condition: one machine per type; scored but not evaluated", function()
    local data, out = tiny_corpus(), tmpdir()
    local no_id = csv_variant(data, function() return true end, { model_id = true })
    local code, text = run(common_args(data, out, no_id))
    A.eq(code, 0, "output:\n" .. text)
    A.truthy(text:find("each machine type is one machine", 1, true), text)
    local m = sys.json_decode(read(fold_dir(out) .. "/metrics.json"))
    A.eq(m.evaluation.machines, { "fan", "pump" })
    local no_condition = csv_variant(data, function(r) return r[5] == "normal" end, { condition = true })
    out = tmpdir()
    code, text = run(common_args(data, out, no_condition))
    A.eq(code, 0, "output:\n" .. text)
    A.truthy(text:find("AUC and pAUC cannot be computed", 1, true), text)
    A.truthy(exists(fold_dir(out) .. "/val_scores.csv"), "the clips are still scored")
end)

test("unknown anomaly settings are refused up front, naming the key and the choices", function()
    local data, out = tiny_corpus(), tmpdir()
    local code, text = run(common_args(data, out) .. " --anomaly.method=forest")
    A.truthy(code ~= 0)
    A.truthy(text:find("anomaly.method must be one of embedding, autoencoder, got 'forest'", 1, true), text)
    code, text = run(common_args(data, out) .. " --anomaly.target_false_positive_rate=1.5")
    A.truthy(code ~= 0)
    A.truthy(text:find("anomaly.target_false_positive_rate", 1, true), text)
end)

return tests
