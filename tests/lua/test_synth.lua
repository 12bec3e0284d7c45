-- The synthetic corpus: determinism, layout, CSV, SNR, 8-channel output and
-- bad input (machrt.synth, scripts/synth.lua, synth.clip, synth.write). Corpora here
-- are 8 to 12 clips (about 30 ms each), written under temporary folders.

local audio = require "machrt.audio"
local synth = require "machrt.synth"
local sys = require "machrt.sys"
local A = require "assert"

local F = require "files"

local T, test, tmpdir = F.suite()
local read = F.read

local function files_of(folder)
    local list = {}
    local p = assert(io.popen("cd '" .. folder .. "' && find . -type f | sort"))
    for line in p:lines() do list[#list + 1] = line:sub(3) end
    p:close()
    return list
end

local function power(t) return (t * t):mean() end

test("two runs with the same seed give the same bytes, for 1 and 2 threads", function()
    local a, b, c = tmpdir{ create = false }, tmpdir{ create = false }, tmpdir{ create = false }
    synth.generate(a, { clips = 8, seed = 3, threads = 1 })
    synth.generate(b, { clips = 8, seed = 3, threads = 2 })
    synth.generate(c, { clips = 8, seed = 4, threads = 2 })
    local fa, fb = files_of(a), files_of(b)
    A.eq(#fa, 10) -- 8 clips, dataset.csv, synth.json
    A.eq(fa, fb)
    for _, f in ipairs(fa) do
        A.truthy(read(a .. "/" .. f) == read(b .. "/" .. f), f .. " differs between runs")
    end
    A.truthy(read(a .. "/fan/id_00/normal/00000000.wav") ~= read(c .. "/fan/id_00/normal/00000000.wav"),
        "another seed must give another clip")
end)

test("layout, WAV format and CSV columns follow MIMII and the reference", function()
    local out = tmpdir{ create = false }
    local info = synth.generate(out, { clips = 12, seed = 1, abnormal_fraction = 0.5 })
    A.eq(info.clips, 12)
    A.eq(info.csv, out .. "/dataset.csv")
    local lines = {}
    for line in io.lines(info.csv) do lines[#lines + 1] = line end
    A.eq(lines[1], ",audio,label,model_id,condition,snr_db,fault_severity")
    A.eq(#lines, 13)
    A.eq(lines[2], "0,fan/id_00/normal/00000000.wav,fan,00,normal,6,0")
    local seen = {}
    for i = 2, #lines do
        local idx, path, label, id, cond, snr, sev =
            lines[i]:match("^(%d+),([^,]+),(%a+),(%d%d),(%a+),(%-?%d+),([%d.]+)$")
        A.truthy(idx, "bad CSV row: " .. lines[i])
        A.eq(tonumber(idx), i - 2)
        A.eq(path, string.format("%s/id_%s/%s/%s", label, id, cond, path:match("(%d+)%.wav$") .. ".wav"))
        A.truthy(path:match("/%d%d%d%d%d%d%d%d%.wav$"), path)
        A.truthy(cond == "normal" or cond == "abnormal", cond)
        A.truthy(snr == "6" or snr == "0" or snr == "-6", snr)
        sev = tonumber(sev)
        A.truthy(cond == "normal" and sev == 0 or cond == "abnormal" and sev > 0 and sev <= 1,
            lines[i])
        seen[label] = (seen[label] or 0) + 1
        local wi = audio.info(out .. "/" .. path)
        A.eq({ wi.sample_rate, wi.channels, wi.frames, wi.format, wi.encoding },
            { 16000, 1, 160000, "wav", "pcm16" })
    end
    A.eq(seen, { fan = 3, pump = 3, slider = 3, valve = 3 })
    for _, f in ipairs(files_of(out)) do A.truthy(not f:find("%.tmp"), "left over: " .. f) end
end)

-- Abnormal clips of a plan, in all and per type and per (type, model id)
-- pair, with the clips of each.
local function abnormal_shares(clips)
    local all, per_type, per_pair = { n = 0, a = 0 }, {}, {}
    for _, c in ipairs(clips) do
        local key = c.type .. "/" .. c.model_id
        per_type[c.type] = per_type[c.type] or { n = 0, a = 0 }
        per_pair[key] = per_pair[key] or { n = 0, a = 0, seq = {} }
        local ab = c.condition == "abnormal" and 1 or 0
        for _, s in ipairs{ all, per_type[c.type], per_pair[key] } do s.n, s.a = s.n + 1, s.a + ab end
        per_pair[key].seq[#per_pair[key].seq + 1] = c
    end
    return all, per_type, per_pair
end

test("abnormal clips: the promised share at any corpus size, per type and model id", function()
    for _, f in ipairs{ 0.2, 0.5, 0.1, 0, 1 } do
        for _, n in ipairs{ 1, 5, 8, 12, 16, 39, 40, 41, 100, 333 } do
            local all, per_type, per_pair = abnormal_shares(synth.plan{ clips = n, abnormal_fraction = f })
            local what = string.format("%d clips at %g", n, f)
            A.eq(all.a, math.floor(n * f + 0.5), what .. ": abnormal clips in all")
            for t, s in pairs(per_type) do
                A.truthy(math.abs(s.a - s.n * f) < 1, string.format("%s: %s has %d abnormal of %d", what, t, s.a, s.n))
            end
            for key, s in pairs(per_pair) do
                A.truthy(math.abs(s.a - s.n * f) < 1, string.format("%s: %s has %d abnormal of %d", what, key, s.a, s.n))
            end
        end
    end
    -- The README's example size: 8 abnormal clips, 2 per type.
    local _, per_type = abnormal_shares(synth.plan{ clips = 40 })
    for _, t in ipairs{ "fan", "pump", "slider", "valve" } do A.eq(per_type[t].a, 2, t) end
end)

test("the default corpus keeps its layout: every fifth clip of each type and model id is abnormal", function()
    local _, _, per_pair = abnormal_shares(synth.plan{})
    local pairs_seen = 0
    for key, s in pairs(per_pair) do
        pairs_seen = pairs_seen + 1
        A.eq(s.n, 60, key)
        for m, c in ipairs(s.seq) do
            A.eq(c.condition, m % 5 == 0 and "abnormal" or "normal", key .. " clip " .. m)
            A.eq(c.snr_db, ({ 6, 0, -6 })[(m - 1) % 3 + 1], key .. " clip " .. m)
        end
    end
    A.eq(pairs_seen, 16)
end)

test("fault severities run from subtle to gross in every type and model id, as the CSV says", function()
    local clips = synth.plan{}
    local per_pair, per_snr = {}, {}
    for _, c in ipairs(clips) do
        if c.condition == "normal" then
            A.eq(c.fault_severity, 0, c.path)
        else
            local key = c.type .. "/" .. c.model_id
            per_pair[key] = per_pair[key] or {}
            table.insert(per_pair[key], c.fault_severity)
            per_snr[c.snr_db] = per_snr[c.snr_db] or {}
            table.insert(per_snr[c.snr_db], c.fault_severity)
        end
    end
    -- Not confounded with the SNR: every SNR gets the whole range, evenly.
    for snr, sev in pairs(per_snr) do
        local sum, lo, hi = 0, 1, 0
        for _, v in ipairs(sev) do sum, lo, hi = sum + v, math.min(lo, v), math.max(hi, v) end
        A.near(sum / #sev, 0.525, 0.01, "mean severity at " .. snr .. " dB")
        A.truthy(lo <= 0.3 and hi >= 0.75, string.format("%g dB: %g to %g", snr, lo, hi))
    end
    for key, sev in pairs(per_pair) do
        A.eq(#sev, 12, key)
        table.sort(sev)
        A.truthy(sev[1] >= 0.05 and sev[1] <= 0.15, key .. ": the subtlest is " .. sev[1])
        A.truthy(sev[#sev] >= 0.9 and sev[#sev] <= 1, key .. ": the grossest is " .. sev[#sev])
        -- Evenly spread: no gap wider than a fifth of the range.
        for i = 2, #sev do A.truthy(sev[i] - sev[i - 1] < 0.2, key .. ": gap at " .. sev[i]) end
        for _, v in ipairs(sev) do A.eq(v, math.floor(v * 100 + 0.5) / 100, "rounded to 0.01") end
    end
    -- The clip is made with the severity the plan (and so the CSV) gives it.
    local c
    for _, x in ipairs(clips) do
        if x.condition == "abnormal" and not c then c = x end
    end
    local clip = { type = c.type, model_id = c.model_id, condition = c.condition,
        fault_severity = c.fault_severity, snr_db = c.snr_db, seed = c.seed, index = c.index }
    local mix = synth.clip(clip)
    clip.fault_severity = 1
    A.truthy((synth.clip(clip) - mix):abs():max() > 0, "the severity must change the sound")
end)

test("the SNR measured on the written file is within 0.5 dB of the request", function()
    local out = tmpdir{ create = false }
    sys.mkdir(out)
    for ti, t in ipairs(synth.types()) do
        for _, snr in ipairs({ 6, 0, -6 }) do
            local clip = { type = t, model_id = 2, condition = ti % 2 == 0 and "abnormal" or "normal",
                snr_db = snr, seed = 5, index = ti }
            local mix, machine, noise = synth.clip(clip)
            A.near(10 * math.log10(power(machine) / power(noise)), snr, 1e-3)
            local path = out .. "/" .. t .. snr .. ".wav"
            clip.path = path
            synth.write({ clip })
            local wave = audio.load(path)
            A.truthy((wave - mix):abs():max() <= 1 / 32768 + 1e-6, "file differs from the mix")
            local measured = 10 * math.log10(power(machine) / power(wave - machine))
            A.near(measured, snr, 0.5, t .. " at " .. snr .. " dB")
        end
    end
end)

test("8-channel clips load with 8 channels; channel 1 is the mono clip", function()
    local out = tmpdir{ create = false }
    local clip = { type = "pump", model_id = 4, snr_db = 0, seed = 2, index = 7,
        path = out .. "/a8.wav", channels = 8 }
    synth.write({ clip })
    local wave, sr = audio.load(clip.path)
    A.shape_eq(wave, { 8, 160000 })
    A.eq(sr, 16000)
    clip.channels, clip.path = 1, out .. "/a1.wav"
    synth.write({ clip })
    local mono = audio.load(clip.path, { channel = 1 })
    A.eq((wave:select(1, 1) - mono):abs():max(), 0)
    -- The other microphones hear the same scene, delayed and with their own gain.
    local c1, c5 = wave:select(1, 1), wave:select(1, 5)
    A.truthy((c1 - c5):abs():max() > 0, "channels must differ")
    local r = (c1 * c5):mean() / math.sqrt(power(c1) * power(c5))
    -- (0.49 here: the delays decorrelate the high bands this recording's
    -- microphone placement brings up.)
    A.truthy(r > 0.4, "channels should be strongly correlated, got " .. r)
    local dir = tmpdir{ create = false }
    local info = synth.generate(dir, { clips = 2, channels = 8 })
    A.eq(audio.info(dir .. "/pump/id_00/normal/00000000.wav").channels, 8)
    A.eq(info.clips, 2)
end)

test("bad options give clear errors", function()
    local out = tmpdir{ create = false }
    A.raises(function() synth.generate(out, { types = { "fan", "drill" } }) end,
        "unknown machine type 'drill'")
    A.raises(function() synth.generate(out, { clips = 0 }) end, "positive integer")
    A.raises(function() synth.generate(out, { clips = 2, ids = { 100 } }) end, "0..99")
    A.raises(function() synth.generate(out, { clips = 2, snr = { 40 } }) end, "[-30, 30]")
    A.raises(function() synth.generate(out, { clips = 2, channels = 2 }) end, "1 or 8")
    A.raises(function() synth.generate(out, { clips = 2, abnormal_fraction = 2 }) end, "[0, 1]")
    A.raises(function() synth.generate(out, { clips = 2, colour = 1 }) end, "unknown option 'colour'")
    A.raises(function() synth.clip{ type = "fan", condition = "broken" } end, "condition")
    A.raises(function() synth.clip{ type = "fan", snr = 3 } end, "unknown option 'snr'")
    A.raises(function() synth.clip{ type = "fan", fault_severity = 0.5 } end,
        "fault_severity must be 0 for a normal clip")
    A.raises(function() synth.clip{ type = "fan", condition = "abnormal", fault_severity = 1.5 } end,
        "fault_severity of an abnormal clip must be in (0, 1]")
    A.eq(audio.synth_clip, nil, "the synthesizer is not part of the audio front end")
    -- Nothing was written by the refused calls.
    A.eq(sys.folder_state(out), "missing")
end)

test("a folder holding other files is refused unless forced", function()
    local out = tmpdir{ create = false }
    sys.mkdir(out)
    local f = assert(io.open(out .. "/notes.txt", "w"))
    f:write("mine\n")
    f:close()
    A.raises(function() synth.generate(out, { clips = 1 }) end, "already holds files", "--force")
    synth.generate(out, { clips = 1, force = true })
    A.eq(read(out .. "/notes.txt"), "mine\n")
    A.truthy(audio.info(out .. "/fan/id_00/normal/00000000.wav").frames == 160000)
end)

test("an unwritable output folder is a clear error", function()
    local base = tmpdir{ create = false }
    sys.mkdir(base)
    local f = assert(io.open(base .. "/file", "w"))
    f:close()
    A.raises(function() synth.generate(base .. "/file", { clips = 1 }) end, "not a folder")
    A.raises(function() synth.generate(base .. "/file/sub", { clips = 1 }) end,
        "cannot create the output folder", "file/sub")
    A.raises(function() synth.write({ { type = "fan", path = base .. "/file/x.wav" } }) end,
        "cannot create folder")
end)

test("ensure generates once, with a message, and then reuses the corpus", function()
    local out = tmpdir{ create = false }
    local info = synth.ensure(out, { clips = 4 })
    A.truthy(info.generated)
    A.eq(#files_of(out), 6)
    local again = synth.ensure(out, { clips = 4 })
    A.eq(again.generated, false)
    A.eq(again.csv, out .. "/dataset.csv")
    -- A run interrupted before its CSV was written is finished on next use.
    os.remove(out .. "/dataset.csv")
    A.truthy(synth.ensure(out, { clips = 4 }).generated)
end)

-- Runs fn with io.stderr captured; returns what was written to it.
local function stderr_of(fn)
    local saved, text = io.stderr, {}
    io.stderr = { write = function(_, ...) for _, v in ipairs{...} do text[#text + 1] = v end end,
                  flush = function() end }
    local ok, err = pcall(fn)
    io.stderr = saved
    if not ok then error(err, 0) end
    return table.concat(text)
end

test("synth.json records the generator version; ensure regenerates another version's corpus", function()
    local out = tmpdir{ create = false }
    synth.ensure(out, { clips = 4, seed = 5 })
    A.eq(synth.version_of(out), synth.VERSION)
    local meta = sys.json_decode(read(out .. "/synth.json"))
    A.eq(meta.generator_version, synth.VERSION)
    A.eq(meta.clips, 4)
    A.eq(meta.seed, 5)
    A.eq(meta.types, { "fan", "pump", "slider", "valve" })
    local clip = out .. "/slider/id_00/normal/00000000.wav"
    local good = read(clip)
    -- The current version: reused, silently.
    local msg = stderr_of(function() A.eq(synth.ensure(out, { clips = 4, seed = 5 }).generated, false) end)
    A.eq(msg, "")
    -- A corpus from an older synthesizer (its clips sound different): remade, saying so.
    local function make_old(version_text)
        local f = assert(io.open(clip, "wb"))
        f:write("old clip")
        f:close()
        if version_text then
            f = assert(io.open(out .. "/synth.json", "wb"))
            f:write(version_text)
            f:close()
        else
            os.remove(out .. "/synth.json")
        end
    end
    for _, case in ipairs{ { '{"generator_version": 1}', "version 1" },
                           { nil, "version 1" },                    -- made before synth.json existed
                           { '{"generator_version": 99}', "version 99" },
                           { "not json", "unknown" } } do
        make_old(case[1])
        local info
        msg = stderr_of(function() info = synth.ensure(out, { clips = 4, seed = 5 }) end)
        A.truthy(info.generated, case[2])
        A.truthy(msg:find(case[2], 1, true) and msg:find("regenerating", 1, true), msg)
        A.truthy(msg:find("version " .. synth.VERSION, 1, true), msg)
        A.truthy(read(clip) == good, "the clip was not regenerated")
        A.eq(synth.version_of(out), synth.VERSION)
    end
end)

test("the command line: a corpus in one call, and errors with exit status 2, no traceback", function()
    local out = tmpdir{ create = false }
    local function run(args)
        local code, text = F.run("./machrt scripts/synth.lua " .. args)
        return text, code
    end
    local text, code = run("--out " .. out .. " --clips 4 --seed 2 --types pump,valve --ids 1,3 "
        .. "--snr=0 --quiet")
    A.eq(code, 0, text)
    A.truthy(text:find("4 clips", 1, true), text)
    A.truthy(audio.info(out .. "/valve/id_01/normal/00000000.wav").frames == 160000)
    local cases = {
        { "--out " .. out .. "x --types fan,drill", "unknown machine type 'drill'", 2 },
        { "--out " .. out .. "x --clips 0", "positive integer", 2 },
        { "--out " .. out .. " --clips 1", "already holds files", 2 },
        { "--clips 2", "--out FOLDER is required", 2 },
        { "--out " .. out .. "x --colour red", "unknown option --colour", 2 },
        { "--out " .. out .. "x --clips many", "--clips must be an integer", 2 },
    }
    for _, c in ipairs(cases) do
        local t, rc = run(c[1])
        A.eq(rc, c[3], c[1])
        A.truthy(t:find(c[2], 1, true), "expected '" .. c[2] .. "' in: " .. t)
        A.truthy(not t:find("stack traceback", 1, true), t)
    end
end)

test("progress into a pipe is plain lines, without carriage returns", function()
    local out = tmpdir{ create = false }
    local code, text = F.run("./machrt scripts/synth.lua --out " .. out .. " --clips 24 --types fan,pump "
                             .. "--threads 2 | cat")
    A.eq(code, 0, text)
    A.truthy(not text:find("\r", 1, true), "a carriage return in piped output: " .. text:gsub("\r", "<CR>"))
    A.truthy(text:find("synth 24/24", 1, true), "the last progress line: " .. text)
    A.truthy(text:find("24 clips in", 1, true), text)
    -- The corpus made on first use (training with no dataset given) shows the same progress.
    local first_use = tmpdir{ create = false }
    code, text = F.run("./machrt -e \"require('machrt.synth').ensure('" .. first_use .. "', { clips = 12 })\" | cat")
    A.eq(code, 0, text)
    A.truthy(text:find("synth 12/12", 1, true), "progress while generating on first use: " .. text)
    A.truthy(not text:find("\r", 1, true), "no carriage return: " .. text)
end)

return T
