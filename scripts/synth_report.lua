-- Realism and difficulty of the synthetic corpus.
--
--   ./machrt scripts/synth_report.lua [--data data/synthetic] [--sample DIR]
--
-- (a) Per machine type, the correlation of the long-term average log-mel
--     spectrum (channel 1, 16 kHz, n_fft 1024, hop 512, 64 mels; the mean
--     over time of the dB spectrogram, averaged over clips) of synthetic
--     clips against the real MIMII sample clips: a 4 x 4 table, rows
--     synthetic, columns real. "raw" correlates the spectra as they are; all
--     machine spectra fall with frequency, so raw values are all high.
--     "type-specific" first subtracts, within each set, the mean spectrum of
--     the four types, leaving what sets a type apart from the others.
--     The sample folder is --sample, else $MACHRT_SAMPLE_DATA; without
--     either this part is skipped (and says so).
-- (b) 5-fold accuracy of a nearest-centroid classifier (Euclidean distance
--     to each type's mean feature) on the per-band mean log-mel of every
--     clip of the corpus: a floor that a trained model must clearly beat.
-- The corpus is generated with the defaults when --data holds none.

local mt = require "machrt"
local audio = require "machrt.audio"
local synth = require "machrt.synth"

local cli = require "machrt.cli"

local CLI = { name = "synth_report", options = { data = "value", sample = "value" },
              usage = "usage: machrt scripts/synth_report.lua [--data data/synthetic] [--sample DIR]\n"
                  .. "  spectral correlation with the real MIMII samples in --sample, else in\n"
                  .. "  $MACHRT_SAMPLE_DATA, and a nearest-centroid accuracy floor\n" }
local args = cli.parse(arg, CLI)
local data = args.data or "data/synthetic"
local sample = args.sample or os.getenv("MACHRT_SAMPLE_DATA")
local TYPES = { "fan", "pump", "slider", "valve" }

local mel = audio.MelSpectrogram{ sample_rate = 16000, n_fft = 1024, hop_length = 512, n_mels = 64 }

-- Per-band mean log-mel of channel 1 of a file, as a Lua list.
local function feature(path)
    local w = audio.load(path, { channel = 1 })
    local db = audio.amplitude_to_db(mel:forward(w))
    return db:mean(2):totable()
end

local function read_csv(path)
    local rows = {}
    local f = assert(io.open(path, "rb"))
    local header = f:read("l")
    local cols = {}
    for c in (header .. ","):gmatch("([^,]*),") do cols[#cols + 1] = c end
    for line in f:lines() do
        local r, j = {}, 1
        for c in (line .. ","):gmatch("([^,]*),") do
            r[cols[j]] = c
            j = j + 1
        end
        rows[#rows + 1] = r
    end
    f:close()
    return rows
end

local function mean_of(list)
    local m = {}
    for b = 1, #list[1] do
        local s = 0
        for _, v in ipairs(list) do s = s + v[b] end
        m[b] = s / #list
    end
    return m
end

local function corr(a, b)
    local n, ma, mb = #a, 0, 0
    for k = 1, n do ma, mb = ma + a[k], mb + b[k] end
    ma, mb = ma / n, mb / n
    local sab, saa, sbb = 0, 0, 0
    for k = 1, n do
        local x, y = a[k] - ma, b[k] - mb
        sab, saa, sbb = sab + x * y, saa + x * x, sbb + y * y
    end
    return sab / math.sqrt(saa * sbb)
end

-- Each type's spectrum minus the mean over the types.
local function centered(spectra)
    local all = {}
    for _, t in ipairs(TYPES) do all[#all + 1] = spectra[t] end
    local m = mean_of(all)
    local out = {}
    for _, t in ipairs(TYPES) do
        out[t] = {}
        for b = 1, #m do out[t][b] = spectra[t][b] - m[b] end
    end
    return out
end

local function print_table(title, syn, real)
    print(title .. " (rows: synthetic, columns: real)")
    io.write(string.format("%-8s", ""))
    for _, t in ipairs(TYPES) do io.write(string.format("%8s", t)) end
    io.write("\n")
    local hits = 0
    for _, s in ipairs(TYPES) do
        io.write(string.format("%-8s", s))
        local best, best_t = -2, nil
        for _, r in ipairs(TYPES) do
            local c = corr(syn[s], real[r])
            if c > best then best, best_t = c, r end
            io.write(string.format("%8.3f", c))
        end
        if best_t == s then hits = hits + 1 end
        io.write(best_t == s and "   best: own type\n" or ("   best: " .. best_t .. "\n"))
    end
    print(string.format("synthetic types closest to their own real type: %d of 4", hits))
end

local info = synth.ensure(data)
local rows = read_csv(info.csv)
local t0 = mt.clock()
local feats = {}
for k, r in ipairs(rows) do feats[k] = feature(data .. "/" .. r.audio) end
print(string.format("corpus: %s, %d clips (features in %.1f s)", data, #rows, mt.clock() - t0))

-- (a) long-term spectra against the real samples
if not sample or sample == "" then
    print("\n(a) skipped: set MACHRT_SAMPLE_DATA (or --sample) to the MIMII sample folder")
else
    local real_rows = read_csv(sample .. "/sample.csv")
    local real, syn = {}, {}
    for _, t in ipairs(TYPES) do
        local r, s = {}, {}
        for _, row in ipairs(real_rows) do
            if row.label == t then r[#r + 1] = feature(sample .. "/" .. row.audio) end
        end
        for k, row in ipairs(rows) do
            if row.label == t then s[#s + 1] = feats[k] end
        end
        real[t], syn[t] = mean_of(r), mean_of(s)
    end
    print("\n(a) long-term average log-mel spectrum, channel 1, 64 mels")
    print_table("raw", syn, real)
    print_table("type-specific", centered(syn), centered(real))
end

-- (b) nearest-centroid classifier, 5 folds by row number
local correct, total, per_fold = 0, 0, {}
for fold = 0, 4 do
    local groups = {}
    for _, t in ipairs(TYPES) do groups[t] = {} end
    for k, r in ipairs(rows) do
        if (k - 1) % 5 ~= fold and groups[r.label] then table.insert(groups[r.label], feats[k]) end
    end
    local cent = {}
    for t, g in pairs(groups) do if #g > 0 then cent[t] = mean_of(g) end end
    local c, n = 0, 0
    for k, r in ipairs(rows) do
        if (k - 1) % 5 == fold then
            local best, best_t = math.huge, nil
            for t, m in pairs(cent) do
                local d = 0
                for b = 1, #m do d = d + (feats[k][b] - m[b]) ^ 2 end
                if d < best then best, best_t = d, t end
            end
            if best_t == r.label then c = c + 1 end
            n = n + 1
        end
    end
    per_fold[#per_fold + 1] = string.format("%.1f", 100 * c / n)
    correct, total = correct + c, total + n
end
print(string.format("\n(b) nearest-centroid on per-band mean log-mel, 5 folds: %.1f %% "
    .. "(folds: %s %%; chance 25 %%)", 100 * correct / total, table.concat(per_fold, ", ")))
