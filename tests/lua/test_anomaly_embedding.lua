-- The embedding detector's clip features and normal statistics
-- (machrt.anomaly.embedding, machrt.anomaly.frames): the spectrum
-- statistics and kurtosis against sums written out here, "both" as the
-- network's output beside them, scores that do not depend on the units of
-- a dimension, the frame scores against a Mahalanobis distance worked out
-- by hand, and the ensemble's standardisation by held-out normal scores.
local mt = require "machrt"
local A = require "assert"
local emb = require "machrt.anomaly.embedding"
local pipeline = require "machrt.pipeline"
local frames = require "machrt.anomaly.frames"

local tests = {}
local function test(name, fn) tests[#tests + 1] = { name, fn } end

local function tiny_model(classes)
    mt.manual_seed(3)
    return pipeline.build_model({ backbone = "resnet18", width = 2, pool = "Avg", dropout = 0 }, classes)
end

test("spectrum features are each log-mel bin's mean and standard deviation over the frames", function()
    mt.manual_seed(7)
    local N, F, T = 2, 5, 9
    local x = mt.randn{ N, 1, F, T } * 4 - 30
    local model = tiny_model(3)
    model:evaluate()
    local e, logits = emb.chunk_features(model, x, "spectrum")
    A.eq(table.concat(e:shape(), "x"), N .. "x" .. 2 * F)
    A.eq(table.concat(logits:shape(), "x"), N .. "x3")
    for n = 1, N do
        for f = 1, F do
            local s, s2 = 0, 0
            for t = 1, T do
                local v = x:get(n, 1, f, t)
                s, s2 = s + v, s2 + v * v
            end
            local mean = s / T
            local sd = math.sqrt(math.max(s2 / T - mean * mean, 0))
            A.near(e:get(n, f), mean, 1e-4, "mean of bin " .. f)
            A.near(e:get(n, F + f), sd, 1e-3, "standard deviation of bin " .. f)
        end
    end
end)

test("'both' is the network's pooled output beside the spectrum statistics; nil is the network alone", function()
    mt.manual_seed(8)
    local x = mt.randn{ 3, 1, 8, 16 }
    local model = tiny_model(4)
    model:evaluate()
    local net = emb.chunk_features(model, x, "network")
    local spec = emb.chunk_features(model, x, "spectrum")
    local both = emb.chunk_features(model, x, "both")
    local old = emb.chunk_features(model, x, nil)
    A.eq(both:size(2), net:size(2) + spec:size(2))
    A.eq((both:narrow(2, 1, net:size(2)) - net):abs():max(), 0)
    A.eq((both:narrow(2, net:size(2) + 1, spec:size(2)) - spec):abs():max(), 0)
    A.eq((old - net):abs():max(), 0, "a run without anomaly.features embeds the network output")
end)

-- Scores of held-out rows against statistics fitted on the others, for a
-- corpus of one machine.
local function scores_of(x, n_train)
    local split = { machines = { "m" }, train = { index = {} } }
    for i = 1, n_train do split.train.index[i] = 1 end
    local cfg = { anomaly = { shrinkage = "ledoit-wolf", score = "mahalanobis" } }
    local stats = emb.fit(cfg, split, { embedding = x:narrow(1, 1, n_train) })
    local d, c = emb.score_rows(stats.m, x:narrow(1, n_train + 1, x:size(1) - n_train))
    return d, c
end

test("Mahalanobis and cosine scores do not depend on the units of a dimension", function()
    mt.manual_seed(9)
    local x = mt.randn{ 30, 6 } + 2
    local d1, c1 = scores_of(x, 20)
    -- Decibels beside activations: one dimension a thousand times larger.
    local scale = mt.tensor{ { 1000, 1, 1, 1, 1, 1 } }
    local d2, c2 = scores_of(x * scale + mt.tensor{ { 0, 0, 0, 0, 0, 0 } }, 20)
    for j = 1, #d1 do
        A.near(d2[j], d1[j], 1e-3 * math.max(1, d1[j]), "Mahalanobis score " .. j)
        A.near(c2[j], c1[j], 1e-4, "cosine score " .. j)
    end
end)

test("moments are the spectrum statistics and each bin's excess kurtosis over the frames", function()
    mt.manual_seed(17)
    local N, F, T = 2, 4, 11
    local x = mt.randn{ N, 1, F, T } * 3 + 5
    local model = tiny_model(3)
    model:evaluate()
    local e = emb.chunk_features(model, x, "moments")
    local spec = emb.chunk_features(model, x, "spectrum")
    A.eq(table.concat(e:shape(), "x"), N .. "x" .. 3 * F)
    A.eq((e:narrow(2, 1, 2 * F) - spec):abs():max(), 0, "the spectrum statistics come first")
    for n = 1, N do
        for f = 1, F do
            local s = 0
            for t = 1, T do s = s + x:get(n, 1, f, t) end
            local mean, m2, m4 = s / T, 0, 0
            for t = 1, T do
                local d = x:get(n, 1, f, t) - mean
                m2, m4 = m2 + d * d / T, m4 + d ^ 4 / T
            end
            A.near(e:get(n, 2 * F + f), m4 / (m2 * m2) - 3, 1e-3, "kurtosis of bin " .. f)
        end
    end
end)

test("levelled moments are the moments of each frame minus its own mean over the bins", function()
    mt.manual_seed(21)
    local N, F, T = 2, 4, 9
    local x = mt.randn{ N, 1, F, T } * 3 + 5
    local model = tiny_model(3)
    model:evaluate()
    -- By hand: subtract each frame's mean over the bins, then the moments.
    local lev = x:clone()
    for n = 1, N do
        for t = 1, T do
            local m = 0
            for f = 1, F do m = m + x:get(n, 1, f, t) / F end
            for f = 1, F do lev:set(x:get(n, 1, f, t) - m, n, 1, f, t) end
        end
    end
    local got = emb.chunk_features(model, x, "levelled")
    A.truthy((got - emb.chunk_features(model, lev, "moments")):abs():max() < 1e-4, "moments of the levelled frames")
    -- A clip made louder by a constant gives the same levelled moments.
    A.truthy((emb.chunk_features(model, x + 7, "levelled") - got):abs():max() < 1e-3, "level drops out")
end)

test("frame rows are the log-mel frames, chunk after chunk, and their differences", function()
    mt.manual_seed(18)
    local N, F, T = 2, 3, 5
    local x = mt.randn{ N, 1, F, T }
    local r = frames.of_chunks(x)
    A.eq(table.concat(r.frames:shape(), "x"), (N * T) .. "x" .. F)
    A.eq(table.concat(r.deltas:shape(), "x"), (N * (T - 1)) .. "x" .. F)
    for n = 1, N do
        for t = 1, T do
            for f = 1, F do
                A.eq(r.frames:get((n - 1) * T + t, f), x:get(n, 1, f, t))
                if t > 1 then
                    A.near(r.deltas:get((n - 1) * (T - 1) + t - 1, f), x:get(n, 1, f, t) - x:get(n, 1, f, t - 1), 1e-6)
                end
            end
        end
    end
    local ok, err = pcall(frames.of_chunks, mt.zeros{ 1, 1, F, 1 })
    A.truthy(not ok and err:find("no frame-to-frame difference", 1, true), tostring(err))
end)

test("a frame score is the mean squared Mahalanobis distance to the normal frames' Gaussian", function()
    -- Two dimensions, no shrinkage: the covariance (divided by n) and its
    -- inverse written out by hand.
    local normal = { { 1, 2 }, { 2, 1 }, { 3, 5 }, { 0, 1 }, { 4, 3 }, { 2, 4 } }
    local n, mx, my = #normal, 0, 0
    for _, r in ipairs(normal) do mx, my = mx + r[1] / n, my + r[2] / n end
    local sxx, syy, sxy = 0, 0, 0
    for _, r in ipairs(normal) do
        sxx, syy, sxy = sxx + (r[1] - mx) ^ 2 / n, syy + (r[2] - my) ^ 2 / n, sxy + (r[1] - mx) * (r[2] - my) / n
    end
    local det = sxx * syy - sxy * sxy
    local clip = { { 5, 0 }, { 1, 1 }, { -2, 3 } }
    local want = 0
    for _, r in ipairs(clip) do
        local dx, dy = r[1] - mx, r[2] - my
        want = want + (syy * dx * dx - 2 * sxy * dx * dy + sxx * dy * dy) / det / #clip
    end
    -- Decibels and activations alike: a dimension in other units gives the same score.
    for _, k in ipairs{ 1, 1000 } do
        local u = mt.tensor{ { k, 1 } }
        local s = emb.stats_of({ anomaly = { shrinkage = 0 } }, mt.tensor(normal) * u)
        A.near(frames.score(s, mt.tensor(clip) * u), want, 1e-3 * want, "units x" .. k)
    end
end)

-- One machine's clips as the embedding table embed() gives: random clip
-- embeddings and frame rows, clip i's frames shifted by shift[i].
local function machine_clips(n, shift)
    local e = { embedding = mt.randn{ n, 3 }, frames = {}, deltas = {} }
    for i = 1, n do
        e.frames[i] = mt.randn{ 20, 2 } + (shift and shift[i] or 0)
        e.deltas[i] = mt.randn{ 19, 2 } * 0.5
    end
    return e
end

test("held-out normal scores: each clip scored by the statistics of the other folds", function()
    mt.manual_seed(19)
    local n = 5 -- 5 folds of 5 clips: each fold is one clip
    local e = machine_clips(n)
    local split = { machines = { "m" }, train = { index = { 1, 1, 1, 1, 1 } } }
    local cfg = { anomaly = { shrinkage = "ledoit-wolf", score = "ensemble" } }
    local s = emb.fit(cfg, split, e).m
    for j = 1, n do
        local rest = {}
        for i = 1, n do if i ~= j then rest[#rest + 1] = e.frames[i] end end
        local alone = emb.stats_of(cfg, frames.stack(rest))
        A.near(s.held_out.frames[j], frames.score(alone, e.frames[j]), 1e-4, "clip " .. j)
    end
    A.eq(emb.normal_scores(cfg, split, { m = s }, e), s.held_out.ensemble)
end)

-- By hand: the mean over `names` of clip j's score standardised by the
-- mean and sample standard deviation of the held-out normal scores.
local function standardised_mean(held_out, got, names, j)
    local sum = 0
    for _, name in ipairs(names) do
        local h, mean, var = held_out[name], 0, 0
        for _, v in ipairs(h) do mean = mean + v / #h end
        for _, v in ipairs(h) do var = var + (v - mean) ^ 2 / (#h - 1) end
        sum = sum + (got[name][j] - mean) / math.sqrt(var)
    end
    return sum / #names
end

test("the ensemble is the mean of its parts, each standardised by the held-out normal scores", function()
    mt.manual_seed(20)
    local n = 12
    local e = machine_clips(n)
    local split = { machines = { "m" }, train = { index = {} } }
    for i = 1, n do split.train.index[i] = 1 end
    local cfg = { anomaly = { shrinkage = "ledoit-wolf", score = "ensemble" } }
    local stats = emb.fit(cfg, split, e)
    local new = machine_clips(3, { 0, 2, 4 })
    local items = { index = { 1, 1, 1 } }
    new.logits = mt.zeros{ 3, 1 }
    local got = emb.scores(stats, split, items, new)
    for j = 1, 3 do
        A.near(got.ensemble[j], standardised_mean(stats.m.held_out, got, { "mahalanobis", "frames", "deltas" }, j),
               1e-6, "clip " .. j)
    end
    A.truthy(got.frames[3] > got.frames[2] and got.frames[2] > got.frames[1], "frames further away score higher")
end)

test("the mixture ensemble standardises mahalanobis, mixture and deltas; held-out mixture scores", function()
    mt.manual_seed(22)
    local n = 10
    local e = machine_clips(n)
    for i = 1, n do e.frames[i] = mt.randn{ 20, 3 } end -- three bins: levelled frames still vary
    local split = { machines = { "m" }, train = { index = {} } }
    for i = 1, n do split.train.index[i] = 1 end
    local cfg = { anomaly = { shrinkage = "ledoit-wolf", score = "mixture_ensemble" } }
    local stats = emb.fit(cfg, split, e)
    -- Clip 1 is in fold 1 with clip 6: the others' mixture scores it.
    local rest = {}
    for i = 1, n do if (i - 1) % 5 ~= 0 then rest[#rest + 1] = e.frames[i] end end
    A.near(stats.m.held_out.mixture[1], frames.score_mixture(frames.fit_mixture(rest), e.frames[1]), 1e-4,
           "held-out mixture score")
    A.eq(emb.normal_scores(cfg, split, stats, e), stats.m.held_out.mixture_ensemble)
    local new = machine_clips(3)
    new.frames = { mt.randn{ 20, 3 }, mt.randn{ 20, 3 } * 3, mt.randn{ 20, 3 } * 6 }
    new.logits = mt.zeros{ 3, 1 }
    local got = emb.scores(stats, split, { index = { 1, 1, 1 } }, new)
    for j = 1, 3 do
        A.near(got.mixture_ensemble[j],
               standardised_mean(stats.m.held_out, got, { "mahalanobis", "mixture", "deltas" }, j), 1e-6, "clip " .. j)
    end
    A.truthy(got.mixture[3] > got.mixture[2] and got.mixture[2] > got.mixture[1], "wider frames score higher")
end)

test("too few frames for the mixture: no mixture score, and asking for it is a clear error", function()
    mt.manual_seed(23)
    local n = 4
    local e = { embedding = mt.randn{ n, 3 }, frames = {}, deltas = {} }
    for i = 1, n do e.frames[i], e.deltas[i] = mt.randn{ 1, 3 }, mt.randn{ 1, 3 } end
    local split = { machines = { "m" }, train = { index = { 1, 1, 1, 1 } } }
    local s = emb.fit({ anomaly = { shrinkage = "ledoit-wolf", score = "ensemble" } }, split, e).m
    A.eq(s.mixture, nil)
    A.truthy(s.held_out.ensemble and not s.held_out.mixture_ensemble, "the ensemble without the mixture works")
    local cfg = { anomaly = { shrinkage = "ledoit-wolf", score = "mixture" } }
    A.raises(function() emb.normal_scores(cfg, split, { m = s }, e) end, "machine m has no mixture score")
end)

return tests
