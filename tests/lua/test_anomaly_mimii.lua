-- The anomaly experiment, predict.lua and monitor.lua on the 8 real MIMII
-- clips (8 channels, 16 kHz, one normal and one abnormal clip of each of 4
-- machines) when MACHRT_SAMPLE_DATA names their folder; skipped, saying
-- why, otherwise. Tiny networks and few epochs: these check that real files
-- go through end to end and that what cannot be done is said, not AUC.

local A = require "assert"
local sys = require "machrt.sys"

local F = require "files"
local tests, test, make_tmpdir = F.suite()
local read, exists = F.read, F.exists

local function sample_folder()
    local folder = os.getenv("MACHRT_SAMPLE_DATA")
    if not folder or folder == "" or not exists(folder .. "/sample.csv") then
        A.skip("MACHRT_SAMPLE_DATA does not name the MIMII sample folder")
    end
    return folder
end

local lines_of = F.lines

-- Training and validation are both sample.csv: the normal clips are scored in-sample.
local function anomaly_run(sample, out, extra)
    return F.run(table.concat({
        "./machrt experiments/anomaly.lua", "--dataset.data_folder=" .. sample,
        "--dataset.train_dataframe=" .. sample .. "/sample.csv",
        "--dataset.validation_dataframe=" .. sample .. "/sample.csv",
        "--environment.number_of_workers=2", "--environment.seed=1", "--environment.threads=1",
        "--output_directory=" .. out, extra,
    }, " "))
end

local EMBEDDING = "--architecture.backbone=resnet18 --architecture.width=8 --training.batch_size=4 "
    .. "--training.epochs=1"

test("MIMII sample, embedding: the default ensemble refused (one normal clip each), cosine runs and says what it did",
     function()
    local sample, out = sample_folder(), make_tmpdir{ create = false }
    local code, text = anomaly_run(sample, out, EMBEDDING)
    A.truthy(code ~= 0, "the ensemble (a covariance) needs 2 normal clips per machine; output:\n" .. text)
    A.truthy(text:find("machine fan/id_00 has a single normal training clip: the mixture_ensemble score needs at "
                       .. "least 2", 1, true), text)
    code, text = anomaly_run(sample, out, EMBEDDING .. " --anomaly.score=cosine --overwrite")
    A.eq(code, 0, "output:\n" .. text)
    A.truthy(text:find("audio: 8 clips with 8 channels: channel 1 is used (audio.channel)", 1, true), text)
    A.truthy(text:find("validation: 4 of the 8 clips are training clips too: their scores are in-sample", 1,
                       true), text)
    A.truthy(text:find("its threshold comes from in-sample scores", 1, true), text)
    local dir = out .. "/anomaly_detection/fold4"
    local rows = F.csv_rows(dir .. "/val_scores.csv")
    A.eq(#rows, 9, "header and the 8 clips")
    for i = 2, 9 do A.truthy(tonumber(rows[i][5]), "a score: " .. table.concat(rows[i], ",")) end
    local m = sys.json_decode(read(dir .. "/metrics.json"))
    A.eq(m.in_sample_validation_clips, 4)
    A.eq(m.evaluation.per_machine["pump/id_00"].normal, 1)
    A.eq(m.evaluation.per_machine["pump/id_00"].abnormal, 1)
end)

test("MIMII sample, autoencoder: trained and scored; predict.lua and a piped monitor on the real files",
     function()
    local sample, out = sample_folder(), make_tmpdir{ create = false }
    local code, text = anomaly_run(sample, out, "--anomaly.method=autoencoder --autoencoder.epochs=2")
    A.eq(code, 0, "output:\n" .. text)
    A.truthy(text:find("autoencoder valve: 279 vectors", 1, true), "one 10 s clip: 309 vectors, 10 % held out; "
             .. "output:\n" .. text)
    local dir = out .. "/anomaly_detection/fold4"
    A.truthy(exists(dir .. "/autoencoder_fan"), "one model per type")
    code, text = F.run(string.format("./machrt scripts/predict.lua --run %s --input %s/sample.csv --threads 1",
                                     dir, sample))
    A.eq(code, 0, text)
    A.truthy(text:find("predict: 8 of the 8 files have several channels: channel 1 (the detector's audio.channel)",
                       1, true), text)
    local got = {}
    for _, line in ipairs(lines_of(text)) do if not line:find("^predict: ") then got[#got + 1] = line end end
    A.eq(got[1], ",file,machine,anomaly_score,threshold,is_anomaly,chunks,error",
         "the CSV's unnamed index column is kept")
    A.eq(#got, 9, text)
    A.truthy(got[3]:match("^1,.*fan/id_00/normal/00000000%.wav,fan/id_00,[%d.e+]+,[%d.e+]+,%a+,1,$"), got[3])
    local wav = sample .. "/valve/id_00/abnormal/00000000.wav"
    code, text = F.run(string.format("cat %s | ./machrt scripts/monitor.lua --run %s - --machine valve/id_00 "
                                     .. "--window 5 --hop 5", wav, dir))
    A.eq(code, 0, text)
    local windows = {}
    for _, line in ipairs(lines_of(text)) do if line:match("^%d") then windows[#windows + 1] = line end end
    -- A 10 s clip, windows of 5 s every 5 s: at 0 and 5 s.
    A.eq(#windows, 2, text)
    A.truthy(text:find("monitor: the stream has 8 channels: channel 1 (the detector's audio.channel) is scored", 1,
                       true), text)
    A.truthy(windows[2]:match("^5%.000,valve/id_00,[%d.e+]+,[%d.e+]+,%a+$"), windows[2])
end)

return tests
