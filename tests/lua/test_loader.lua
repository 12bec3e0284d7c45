-- The batch loader (machrt.data.loader) and its clip job module
-- (machrt.data.clips): batches identical for any number of workers, seeded
-- shuffling, drop_last, resuming at a batch, in-order results; clips cropped,
-- padded and chunked as audio.load reads the files, bad files failing or
-- skipped, the memory and disk caches, channel picks. Corpora are 4 to 8
-- synthetic clips (10 s, 16 kHz, read at 8 kHz) in temporary folders.

local mt = require "machrt"
local audio = require "machrt.audio"
local data = require "machrt.data"
local clips = require "machrt.data.clips"
local random = require "machrt.random"
local synth = require "machrt.synth"
local workers = require "machrt.workers"
local A = require "assert"

local F = require "files"

local T, test, tmpdir, defer = F.suite()

local function loader(opts)
    local l = data.Loader(opts)
    defer(function() l:close() end)
    return l
end

-- Every (b, batch) of an epoch, as plain tables.
local function collect(l, epoch, first)
    local out = {}
    for b, batch in l:epoch(epoch, first) do out[#out + 1] = { b = b, batch = batch } end
    return out
end

-- ---- the loader, with a small job module -----------------------------------

-- Each item's row holds three uniforms of its own stream; config.wait[b]
-- holds batch b back that many seconds; config.fail_batch raises.
local JOB = [[
local mt = require "machrt"
local random = require "machrt.random"
return function(config, index)
    return function(job)
        local t0 = mt.clock()
        local wait = config.wait and config.wait[job.batch] or 0
        while mt.clock() - t0 < wait do end
        if config.fail_batch == job.batch then error("bad batch " .. job.batch) end
        local x = mt.empty{ #job.indices, 3 }
        for k, i in ipairs(job.indices) do
            local r = random.stream(config.seed, job.epoch, i)
            for c = 1, 3 do x:set(r:uniform(), k, c) end
        end
        return { x = x, indices = job.indices, epoch = job.epoch, batch = job.batch,
                 worker = index, done = mt.clock() }
    end
end
]]

local function job_module()
    local dir = tmpdir()
    local f = assert(io.open(dir .. "/lt_job.lua", "w"))
    f:write(JOB)
    f:close()
    package.path = dir .. "/?.lua;" .. package.path
    defer(function() package.loaded.lt_job = nil end)
end

-- What a batch holds, without the worker-dependent fields.
local function content(batches)
    local out = {}
    for _, e in ipairs(batches) do
        out[#out + 1] = { b = e.b, indices = e.batch.indices, batch = e.batch.batch,
                          epoch = e.batch.epoch, x = e.batch.x:totable() }
    end
    return out
end

test("batches are identical for workers = 0, 1 and 3", function()
    job_module()
    local runs = {}
    for _, w in ipairs({ 0, 1, 3 }) do
        local l = loader{ module = "lt_job", config = { seed = 4 }, size = 23, batch_size = 4,
                          seed = 5, workers = w, prefetch = 1 }
        runs[w] = content(collect(l, 2))
        l:close()
    end
    A.eq(#runs[0], 6)
    A.eq(runs[1], runs[0])
    A.eq(runs[3], runs[0])
    -- The epoch covers every item once, in the loader's order.
    local l = loader{ module = "lt_job", config = { seed = 4 }, size = 23, batch_size = 4, seed = 5 }
    local order, k = l:order(2), 0
    for b, e in ipairs(runs[0]) do
        A.eq(e.b, b)
        for _, i in ipairs(e.indices) do
            k = k + 1
            A.eq(i, order[k])
        end
    end
    A.eq(k, 23)
    -- Row values are the item's own draws (the job ran on the right items).
    local last = runs[3][6]
    A.near(last.x[1][1], random.stream(4, 2, last.indices[1]):uniform(), 1e-7)
end)

test("results come in order even when workers finish out of order", function()
    job_module()
    local l = loader{ module = "lt_job", size = 12, batch_size = 2, shuffle = false, workers = 3,
                      config = { seed = 1, wait = { 0.15, 0.1, 0.05, 0, 0.06, 0 } } }
    local got = collect(l, 1)
    A.eq(#got, 6)
    local inversions = 0
    for b, e in ipairs(got) do
        A.eq(e.b, b)
        A.eq(e.batch.batch, b)
        A.eq(e.batch.indices, { 2 * b - 1, 2 * b })
        if b > 1 and got[b - 1].batch.done > e.batch.done then inversions = inversions + 1 end
    end
    A.truthy(inversions > 0, "the waits should have made some batch finish before its predecessor")
end)

test("shuffling: a permutation per epoch, reproducible for a seed", function()
    job_module()
    local function L(seed, shuffle)
        return loader{ module = "lt_job", config = { seed = 1 }, size = 40, batch_size = 8,
                       seed = seed, shuffle = shuffle }
    end
    local a, b = L(7), L(7)
    local o1, o2 = a:order(1), a:order(2)
    local seen = {}
    for _, i in ipairs(o1) do
        A.truthy(i >= 1 and i <= 40 and not seen[i], "bad index " .. i)
        seen[i] = true
    end
    A.eq(#o1, 40)
    A.eq(b:order(1), o1)
    A.eq(b:order(2), o2)
    local function differ(x, y)
        local n = 0
        for i = 1, #x do if x[i] ~= y[i] then n = n + 1 end end
        return n
    end
    A.truthy(differ(o1, o2) > 20, "epochs 1 and 2 should be ordered differently")
    A.truthy(differ(L(8):order(1), o1) > 20, "another seed should give another order")
    -- Each epoch's batches follow its order.
    local jobs = a:jobs(2)
    A.eq(jobs[1].indices, { o2[1], o2[2], o2[3], o2[4], o2[5], o2[6], o2[7], o2[8] })
    A.eq({ jobs[5].epoch, jobs[5].batch }, { 2, 5 })
    local ident = {}
    for i = 1, 40 do ident[i] = i end
    A.eq(L(7, false):order(3), ident)
    A.eq(L(7, false):jobs(1)[2].indices, { 9, 10, 11, 12, 13, 14, 15, 16 })
end)

test("drop_last: the number and sizes of batches", function()
    job_module()
    local keep = loader{ module = "lt_job", config = { seed = 1 }, size = 10, batch_size = 4, seed = 2 }
    local drop = loader{ module = "lt_job", config = { seed = 1 }, size = 10, batch_size = 4, seed = 2,
                         drop_last = true }
    A.eq(keep:num_batches(), 3)
    A.eq(drop:num_batches(), 2)
    local k, d = collect(keep, 1), collect(drop, 1)
    A.eq({ #k, #d }, { 3, 2 })
    A.eq({ #k[1].batch.indices, #k[2].batch.indices, #k[3].batch.indices }, { 4, 4, 2 })
    A.shape_eq(k[3].batch.x, { 2, 3 })
    A.eq({ #d[1].batch.indices, #d[2].batch.indices }, { 4, 4 })
    local exact = loader{ module = "lt_job", config = { seed = 1 }, size = 12, batch_size = 4,
                          drop_last = true }
    A.eq(exact:num_batches(), 3)
    A.eq(loader{ module = "lt_job", config = {}, size = 5, batch_size = 8 }:num_batches(), 1)
end)

test("a batch larger than the data with drop_last is an error naming both", function()
    job_module()
    A.raises(function()
        data.Loader{ module = "lt_job", size = 5, batch_size = 8, drop_last = true, name = "train" }
    end, "train: batch size 8 is larger than the 5 items", "drop_last")
    A.raises(function() data.Loader{ module = "lt_job", size = 0, batch_size = 8 } end, "empty")
    A.raises(function() data.Loader{ module = "lt_job", size = 4, batch_size = 0 } end, "batch_size", "got 0")
    A.raises(function() data.Loader{ module = "lt_job", size = 4.5, batch_size = 2 } end, "size", "4.5")
    A.raises(function() data.Loader{ module = "lt_job", size = 4, batch_size = 2, workers = -1 } end,
        "workers", "got -1")
    A.raises(function() data.Loader{ size = 4, batch_size = 2 } end, "module")
end)

test("first skips batches: the rest are the same batches", function()
    job_module()
    for _, w in ipairs({ 0, 2 }) do
        local l = loader{ module = "lt_job", config = { seed = 9 }, size = 14, batch_size = 3, seed = 1, workers = w }
        local all = content(collect(l, 3))
        local rest = content(collect(l, 3, 4))
        A.eq(#all, 5)
        A.eq(#rest, 2)
        A.eq(rest, { all[4], all[5] }, "workers = " .. w)
        A.eq(#collect(l, 3, 6), 0)
    end
end)

test("a job error stops the epoch with the job's message; a broken-off epoch leaves the next intact", function()
    job_module()
    local l0 = loader{ module = "lt_job", config = { seed = 1, fail_batch = 2 }, size = 8, batch_size = 2 }
    A.raises(function() collect(l0, 1) end, "bad batch 2")
    local l2 = loader{ module = "lt_job", config = { seed = 1, fail_batch = 2 }, size = 8, batch_size = 2, workers = 2 }
    A.raises(function() collect(l2, 1) end, "worker job", "failed", "bad batch 2")
    -- Stop after one batch, then run the next epoch through the same pool.
    local cfg = { seed = 6 }
    local a = loader{ module = "lt_job", config = cfg, size = 16, batch_size = 2, seed = 3, workers = 2 }
    for b in a:epoch(1) do if b == 1 then break end end
    local ref = loader{ module = "lt_job", config = cfg, size = 16, batch_size = 2, seed = 3 }
    A.eq(content(collect(a, 2)), content(collect(ref, 2)))
    a:close()
    a:close()
end)

-- ---- machrt.data.clips ------------------------------------------------------

local CLASSES = { fan = 1, pump = 2, slider = 3, valve = 4 }

-- A synthetic corpus: folder, files, one-hot targets.
local function corpus(n, seed)
    local dir = tmpdir()
    local info = synth.generate(dir, { clips = n, seed = seed or 1 })
    local files, targets = {}, {}
    local first = true
    for line in io.lines(info.csv) do
        if not first then
            local path, label = line:match("^%d+,([^,]+),(%a+),")
            files[#files + 1] = path
            local t = { 0, 0, 0, 0 }
            t[CLASSES[label]] = 1
            targets[#targets + 1] = t
        end
        first = false
    end
    A.eq(#files, n)
    return dir, files, targets
end

local function clip_config(dir, files, targets, extra)
    local rows = {}
    for i = 1, #files do rows[i] = 100 + i end
    local cfg = { data_folder = dir, files = files, rows = rows, targets = targets,
                  sample_rate = 8000, channel = 1, mode = "train", chunk_seconds = 2,
                  max_seconds = 600, cache = "none", on_error = "fail", seed = 3 }
    for k, v in pairs(extra or {}) do cfg[k] = v end
    return cfg
end

-- The reference: the whole file as audio.load reads it, as a flat table.
local function full(path, opts)
    local w = audio.load(path, opts)
    return w:reshape{ w:numel() }:totable()
end

-- The 1-based start at which `row` is a window of `wave`, or nil.
local function window_start(row, wave)
    for s = 1, #wave - #row + 1 do
        if wave[s] == row[1] and wave[s + 1] == row[2] and wave[s + 2] == row[3] then
            local ok = true
            for j = 1, #row do
                if wave[s + j - 1] ~= row[j] then ok = false; break end
            end
            if ok then return s end
        end
    end
    return nil
end

test("train mode: {B, chunk} crops of the resampled clips, {B, C} targets", function()
    local dir, files, targets = corpus(6)
    local cfg = clip_config(dir, files, targets)
    local l = loader{ module = "machrt.data.clips", config = cfg, size = 6, batch_size = 4, seed = 2 }
    local got = collect(l, 1)
    A.eq(#got, 2)
    local starts = {}
    for _, e in ipairs(got) do
        local batch = e.batch
        local B = #batch.indices
        A.shape_eq(batch.wave, { B, 16000 })
        A.shape_eq(batch.target, { B, 4 })
        A.eq(batch.skipped, {})
        local w, t = batch.wave:totable(), batch.target:totable()
        for b, i in ipairs(batch.indices) do
            A.eq(t[b], targets[i])
            local ref = full(dir .. "/" .. files[i], { sample_rate = 8000 })
            A.eq(#ref, 80000)
            local s = window_start(w[b], ref)
            A.truthy(s, "row " .. b .. " is not a window of " .. files[i])
            starts[#starts + 1] = s
        end
    end
    table.sort(starts)
    A.truthy(starts[#starts] > starts[1], "crops should start at different places")
    -- The same crops for 2 workers; another epoch crops elsewhere.
    local l2 = loader{ module = "machrt.data.clips", config = cfg, size = 6, batch_size = 4, seed = 2, workers = 2 }
    local got2 = collect(l2, 1)
    for k = 1, 2 do
        A.eq(got2[k].batch.indices, got[k].batch.indices)
        A.eq(got2[k].batch.wave:totable(), got[k].batch.wave:totable())
    end
    local e2 = collect(l, 2)[1].batch
    local i = e2.indices[1]
    local again = window_start(e2.wave:totable()[1], full(dir .. "/" .. files[i], { sample_rate = 8000 }))
    A.truthy(again, "epoch 2 crop is a window too")
end)

test("train mode: a clip shorter than the chunk is zero-padded at the end", function()
    local dir = tmpdir()
    local r = random.stream(1)
    local short = {}
    for j = 1, 32000 do short[j] = r:uniform(-0.5, 0.5) end
    audio.save(dir .. "/short.wav", mt.tensor(short), 16000)
    local cfg = clip_config(dir, { "short.wav" }, { { 0, 1 } }, { chunk_seconds = 3 })
    local l = loader{ module = "machrt.data.clips", config = cfg, size = 1, batch_size = 1 }
    local batch = collect(l, 1)[1].batch
    A.shape_eq(batch.wave, { 1, 24000 })
    A.tensor_near(batch.target, { { 0, 1 } }, 0)
    local row = batch.wave:totable()[1]
    local ref = full(dir .. "/short.wav", { sample_rate = 8000 })
    A.eq(#ref, 16000)
    for j = 1, 16000 do
        if row[j] ~= ref[j] then error(string.format("sample %d: %g, file has %g", j, row[j], ref[j])) end
    end
    for j = 16001, 24000 do
        if row[j] ~= 0 then error(string.format("padding sample %d is %g", j, row[j])) end
    end
end)

test("chunks mode: floor(10 / 5) = 2 chunks per clip, in order, with counts", function()
    local dir, files, targets = corpus(3)
    local cfg = clip_config(dir, files, targets, { mode = "chunks", chunk_seconds = 5 })
    local l = loader{ module = "machrt.data.clips", config = cfg, size = 3, batch_size = 3, shuffle = false }
    local batch = collect(l, 1)[1].batch
    A.eq(batch.counts, { 2, 2, 2 })
    A.eq(batch.indices, { 1, 2, 3 })
    A.shape_eq(batch.chunks, { 6, 40000 })
    A.tensor_near(batch.target, targets, 0)
    local ch = batch.chunks:totable()
    for i = 1, 3 do
        local ref = full(dir .. "/" .. files[i], { sample_rate = 8000 })
        for k = 1, 2 do
            local row = ch[2 * (i - 1) + k]
            A.eq(window_start(row, ref), (k - 1) * 40000 + 1, files[i] .. " chunk " .. k)
        end
    end
    -- max_seconds cuts each clip to its first chunk.
    cfg.max_seconds = 5
    local l5 = loader{ module = "machrt.data.clips", config = cfg, size = 3, batch_size = 3, shuffle = false }
    local b5 = collect(l5, 1)[1].batch
    A.eq(b5.counts, { 1, 1, 1 })
    A.eq(b5.chunks:totable()[2], ch[3])
end)

-- Missing and corrupt files: fail names the row and the file, skip leaves it out.
local function bad_file_case(make_bad, bad_name)
    local dir, files, targets = corpus(2)
    make_bad(dir .. "/" .. bad_name)
    local f3 = { files[1], bad_name, files[2] }
    local t3 = { targets[1], { 0, 0, 1, 0 }, targets[2] }
    for _, w in ipairs({ 0, 1 }) do
        local cfg = clip_config(dir, f3, t3)
        local l = loader{ module = "machrt.data.clips", config = cfg, size = 3, batch_size = 3,
                          shuffle = false, workers = w }
        A.raises(function() collect(l, 1) end, "row 102", bad_name)
        l:close()
        cfg.on_error = "skip"
        local s = loader{ module = "machrt.data.clips", config = cfg, size = 3, batch_size = 3,
                          shuffle = false, workers = w }
        local batch = collect(s, 1)[1].batch
        A.eq(batch.indices, { 1, 3 })
        A.eq(#batch.skipped, 1)
        A.truthy(batch.skipped[1]:find("row 102 (" .. bad_name .. ")", 1, true), batch.skipped[1])
        A.shape_eq(batch.wave, { 2, 16000 })
        A.tensor_near(batch.target, { targets[1], targets[2] }, 0)
        A.truthy(window_start(batch.wave:totable()[2], full(dir .. "/" .. files[2], { sample_rate = 8000 })),
            "the row after the skipped clip is the third file")
        -- Chunks mode skips alike.
        cfg.mode, cfg.chunk_seconds = "chunks", 5
        local c = loader{ module = "machrt.data.clips", config = cfg, size = 3, batch_size = 3,
                          shuffle = false, workers = w }
        local cb = collect(c, 1)[1].batch
        A.eq(cb.counts, { 2, 2 })
        A.eq(#cb.skipped, 1)
        A.shape_eq(cb.target, { 2, 4 })
    end
end

test("a missing file fails naming row and file, or is skipped", function()
    bad_file_case(function() end, "nope/missing.wav")
end)

test("a corrupt file fails naming row and file, or is skipped", function()
    bad_file_case(function(path)
        local f = assert(io.open(path, "wb"))
        f:write("RIFF\0\0\0\0WAVEgarbage" .. string.rep("\255\1", 300))
        f:close()
    end, "bad.wav")
end)

test("a float file with a NaN sample fails naming row and file, or is skipped", function()
    bad_file_case(function(path)
        F.write_float_wav(path, 16000, 16000, function(i) return i == 9000 and 0 / 0 or 0.01 end)
    end, "nan.wav")
end)

test("cache memory: a second epoch hits; cache none keeps nothing", function()
    local dir, files, targets = corpus(4)
    workers.cache_clear()
    defer(workers.cache_clear)
    local none = loader{ module = "machrt.data.clips", config = clip_config(dir, files, targets),
                         size = 4, batch_size = 2, workers = 2 }
    collect(none, 1)
    A.eq(workers.cache_stats(), { entries = 0, bytes = 0, hits = 0, misses = 0 })
    local cfg = clip_config(dir, files, targets, { cache = "memory" })
    local l = loader{ module = "machrt.data.clips", config = cfg, size = 4, batch_size = 2, workers = 2 }
    local e1 = collect(l, 1)
    -- The files' 16-bit samples as decoded: 160000 frames at 16 kHz, 2 bytes
    -- each, packed four to an int64 after a 2-element header; the float32
    -- waves at 8 kHz would take 4 * 80000 * 4 bytes.
    local packed_bytes = 4 * (2 + 160000 / 4) * 8
    A.eq(workers.cache_stats(), { entries = 4, bytes = packed_bytes, hits = 0, misses = 4 })
    local e1b = collect(l, 1)
    A.eq(workers.cache_stats(), { entries = 4, bytes = packed_bytes, hits = 4, misses = 4 })
    for k = 1, 2 do A.eq(e1b[k].batch.wave:totable(), e1[k].batch.wave:totable()) end
    -- What a hit gives is the file as audio.load reads and resamples it, bit for bit.
    local path = clips.path_of(cfg, 1)
    local key = path .. "|sr=8000|ch=1|rs=soxr"
    A.eq(workers.cache_get(key):dtype(), "int64", "the samples are kept, not the wave")
    for _, how in ipairs{ "soxr", "torchaudio" } do
        local opts = { cache = "memory", sample_rate = 8000, channel = 1, resampler = how }
        local want = audio.load(path, { sample_rate = 8000, resampler = how })
        for _ = 1, 2 do -- the miss, then the hit
            local got = clips.load_wave(path, opts)
            A.eq(mt.checksum({ x = got }, {}), mt.checksum({ x = want:select(1, 1):contiguous() }, {}), how)
        end
    end
    -- A file that is not 16-bit PCM keeps its float32 wave.
    local float_path = tmpdir() .. "/float.wav"
    F.write_float_wav(float_path, 16000, 16000, function() return 0.25 end)
    local wave = clips.load_wave(float_path, { cache = "memory", sample_rate = 8000, channel = 1 })
    A.eq(workers.cache_get(float_path .. "|sr=8000|ch=1|rs=soxr"):dtype(), "float32")
    A.eq(wave:size(1), 8000)
end)

test("cache disk and memory: a wave resampled by one resampler is never served for the other", function()
    local dir, files = corpus(1)
    local cache = tmpdir()
    workers.cache_clear()
    defer(workers.cache_clear)
    local path = dir .. "/" .. files[1]
    local soxr = clips.load_wave(path, { cache = "disk", cache_folder = cache, sample_rate = 8000, channel = 1 })
    for _, clear in ipairs({ false, true }) do -- from the memory cache, then from the disk
        if clear then workers.cache_clear() end
        local sinc = clips.load_wave(path, { cache = "disk", cache_folder = cache, sample_rate = 8000,
                                             channel = 1, resampler = "torchaudio" })
        A.eq(sinc:totable(), full(path, { sample_rate = 8000, resampler = "torchaudio" }))
        A.truthy((sinc - soxr):abs():max() > 1e-4, "the two resamplers give different waves")
    end
    local p = assert(io.popen("ls '" .. cache .. "' | wc -l"))
    A.eq(tonumber(p:read("a")), 2, "cache files: one per resampler")
    p:close()
end)

test("cache disk: files in cache_folder, read back after clearing and by a fresh process", function()
    local dir, files, targets = corpus(3)
    local cache = tmpdir()
    workers.cache_clear()
    defer(workers.cache_clear)
    local cfg = clip_config(dir, files, targets, { cache = "disk", cache_folder = cache,
                                                   mode = "chunks", chunk_seconds = 5 })
    local l = loader{ module = "machrt.data.clips", config = cfg, size = 3, batch_size = 3, shuffle = false }
    local first = collect(l, 1)[1].batch.chunks:totable()
    local names = {}
    local p = assert(io.popen("ls '" .. cache .. "'"))
    for name in p:lines() do names[#names + 1] = name end
    p:close()
    A.eq(#names, 3)
    for _, n in ipairs(names) do A.truthy(n:match("^%x+%.safetensors$"), n) end
    -- Sealed as a checkpoint is: one checksum convention for every file machrt verifies.
    local run_folder = require "machrt.run_folder"
    local tensors, meta = mt.load(cache .. "/" .. names[1])
    A.truthy(meta[run_folder.CHECKSUM], "the cache file carries " .. run_folder.CHECKSUM)
    A.eq(run_folder.intact(tensors, meta), true)

    -- Cleared memory cache: the waves come from the disk, not from decoding.
    workers.cache_clear()
    local real_load, decoded = audio.load, 0
    audio.load = function(...) decoded = decoded + 1; return real_load(...) end
    defer(function() audio.load = real_load end)
    local again = collect(l, 1)[1].batch.chunks:totable()
    audio.load = real_load
    A.eq(decoded, 0, "audio.load calls with a disk cache")
    A.eq(again, first)

    -- A fresh process that cannot decode at all still gets the waves.
    local scratch = tmpdir()
    local script, out = scratch .. "/read_cache.lua", scratch .. "/fresh.safetensors"
    local f = assert(io.open(script, "w"))
    f:write(string.format([[
local mt = require "machrt"
local audio = require "machrt.audio"
local clips = require "machrt.data.clips"
audio.load = function() error("decoded instead of read from the disk cache") end
local cfg = { cache = "disk", cache_folder = %q, sample_rate = 8000, channel = 1 }
local out = {}
for i, path in ipairs({ %q, %q, %q }) do out["w" .. i] = clips.load_wave(path, cfg) end
mt.save(%q, out)
]], cache, dir .. "/" .. files[1], dir .. "/" .. files[2], dir .. "/" .. files[3], out))
    f:close()
    local code, text = F.run("./machrt '" .. script .. "'")
    A.truthy(code == 0, "the fresh process failed: " .. text)
    local saved = mt.load(out)
    for i = 1, 3 do
        A.eq(saved["w" .. i]:totable(), full(dir .. "/" .. files[i], { sample_rate = 8000 }), "file " .. i)
    end

    -- A changed source file is decoded again, not served stale.
    workers.cache_clear()
    local r = random.stream(2)
    local new = {}
    for j = 1, 24000 do new[j] = r:uniform(-0.5, 0.5) end
    audio.save(dir .. "/" .. files[2], mt.tensor(new), 16000)
    local w2 = clips.load_wave(dir .. "/" .. files[2], cfg)
    A.eq(w2:totable(), full(dir .. "/" .. files[2], { sample_rate = 8000 }))
    A.eq(w2:numel(), 12000)

    -- A damaged cache file (one flipped bit of a sample) is decoded again, not served.
    workers.cache_clear()
    for _, n in ipairs(names) do
        local path = cache .. "/" .. n
        local bytes = F.read(path)
        local fh = assert(io.open(path, "r+b"))
        fh:seek("set", #bytes - 5)
        fh:write(string.char(bytes:byte(#bytes - 4) ~ 0x01))
        fh:close()
    end
    decoded = 0
    audio.load = function(...) decoded = decoded + 1; return real_load(...) end
    local w1 = clips.load_wave(dir .. "/" .. files[1], cfg)
    audio.load = real_load
    A.eq(decoded, 1, "the damaged cache file is decoded again")
    A.eq(w1:totable(), full(dir .. "/" .. files[1], { sample_rate = 8000 }))
end)

test("multi-channel files: channel 3 is row 3 of the file; channel 9 of 8 fails", function()
    local dir = tmpdir()
    local r = random.stream(5)
    local rows = {}
    for c = 1, 8 do
        rows[c] = {}
        for j = 1, 16000 do rows[c][j] = r:uniform(-0.5, 0.5) end
    end
    audio.save(dir .. "/eight.wav", mt.tensor(rows), 16000)
    A.eq(audio.info(dir .. "/eight.wav").channels, 8)
    local cfg = clip_config(dir, { "eight.wav" }, { { 1, 0 } }, { channel = 3, chunk_seconds = 1 })
    local l = loader{ module = "machrt.data.clips", config = cfg, size = 1, batch_size = 1, workers = 1 }
    local row = collect(l, 1)[1].batch.wave:totable()[1]
    A.eq(row, full(dir .. "/eight.wav", { channel = 3, sample_rate = 8000 }))
    A.truthy(A.fmt(row) ~= A.fmt(full(dir .. "/eight.wav", { channel = 1, sample_rate = 8000 })),
        "channel 3 must differ from channel 1")
    cfg.channel = 9
    for _, w in ipairs({ 0, 1 }) do
        local bad = loader{ module = "machrt.data.clips", config = cfg, size = 1, batch_size = 1, workers = w }
        A.raises(function() collect(bad, 1) end, "row 101", "eight.wav", "has 8 channels", "channel = 9")
        bad:close()
    end
end)

test("augment in the worker: a fixed 6 dB gain scales the same crops", function()
    local dir, files, targets = corpus(2)
    local plain = clip_config(dir, files, targets)
    local loud = clip_config(dir, files, targets, { augment = { gain = { min_db = 6, max_db = 6 } } })
    local a = collect(loader{ module = "machrt.data.clips", config = plain, size = 2, batch_size = 2 }, 1)
    local b = collect(loader{ module = "machrt.data.clips", config = loud, size = 2, batch_size = 2, workers = 1 }, 1)
    A.eq(b[1].batch.indices, a[1].batch.indices)
    local wa, wb = a[1].batch.wave:totable(), b[1].batch.wave:totable()
    local k = 10 ^ (6 / 20)
    for r = 1, 2 do
        for j = 1, #wa[r], 997 do A.near(wb[r][j], k * wa[r][j], 1e-5) end
    end
end)

test("the MIMII sample (MACHRT_SAMPLE_DATA): one batch of its 8-channel files", function()
    local folder = os.getenv("MACHRT_SAMPLE_DATA")
    if not folder or folder == "" then A.skip("MACHRT_SAMPLE_DATA is not set") end
    local csv = folder .. "/sample.csv"
    if not io.open(csv) then A.skip(csv .. " not found") end
    local df = data.read_csv(csv)
    local files, targets = {}, {}
    for i = 1, 2 do
        files[i] = df:column("audio")[i]
        targets[i] = { 1 }
    end
    local cfg = clip_config(folder, files, targets, { sample_rate = 16000, channel = 2 })
    local batch = collect(loader{ module = "machrt.data.clips", config = cfg, size = 2, batch_size = 2,
                                  shuffle = false, workers = 1 }, 1)[1].batch
    A.shape_eq(batch.wave, { 2, 32000 })
    for i = 1, 2 do
        local path = folder .. "/" .. files[i]
        A.eq(audio.info(path).channels, 8)
        A.truthy(window_start(batch.wave:totable()[i], full(path, { channel = 2, sample_rate = 16000 })),
            files[i] .. ": the crop is not a window of channel 2")
    end
end)

return T
