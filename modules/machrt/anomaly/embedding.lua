-- The embedding detector: a network learns which machine (type and model
-- id) it hears from normal clips; a clip is anomalous when its pooled
-- embedding lies far from its machine's normal embeddings, or its log-mel
-- frames far from the machine's normal frames (machrt.anomaly.frames).
--
--   local model, loss = emb.build(cfg, split)            -- ResNet + head, its loss
--   local e = emb.embed(model, front, loader, n, cfg.anomaly.features)  -- {embedding, logits, frames, deltas}
--   local stats = emb.fit(cfg, split, e_train)            -- per machine: Gaussians, held-out normal scores
--   local scores = emb.scores(stats, split, items, e)     -- {mahalanobis, cosine, frames, deltas, mixture,
--                                                         --  ensemble, mixture_ensemble, nll}
local mt = require "machrt"
local nn = require "machrt.nn"
local pipeline = require "machrt.pipeline"
local log = require "machrt.log"
local frames = require "machrt.anomaly.frames"

local M = {}

local function fail(fmt, ...) error(string.format(fmt, ...), 0) end

--- The network (architecture section) with the head of anomaly.head in
--- place of its classifier, on the CPU, and the training loss.
function M.build(cfg, split, opts)
    local a, C = cfg.anomaly, #split.machines
    if C < 2 and a.head ~= "softmax" then
        log.info("anomaly.head = %s with a single machine: the classifier has nothing to tell apart", a.head)
    end
    local model = pipeline.build_model(cfg.architecture, C, opts)
    local fc = model.children.fc
    local D = fc.cin
    local loss
    if a.head == "softmax" then
        loss = nn.CrossEntropyLoss()
    else
        local scale = a.head == "adacos" and math.sqrt(2) * math.log(math.max(C - 1, 2)) or a.scale
        local head = nn.CosineLinear(D, C, { scale = scale })
        head:_set_path("fc")
        model.children.fc = head
        model:flatten_parameters()
        loss = a.head == "adacos" and nn.AdaCosLoss(head) or nn.ArcFaceLoss(head, { margin = a.margin })
    end
    return model, loss
end

--- The embedding of each chunk of a front-end output x ({N, 1, bins,
--- frames}) and the head's logits, both {N, .} on the CPU. What the
--- embedding holds is anomaly.features: "network" (the pooled network
--- output), "spectrum" (each log-mel bin's mean and standard deviation over
--- the chunk's frames: the fine spectral detail a fault adds, which a
--- network that tells machines apart easily has no reason to keep),
--- "moments" (the spectrum and each bin's excess kurtosis over the frames:
--- how peaked its distribution is, which short knocks and clicks raise),
--- "levelled" (the moments of the frames levelled first: each frame minus
--- its own mean over the bins, so that a clip's loudness, which load and
--- microphone distance move, drops out and the spectrum's shape remains) or
--- "both" (network and spectrum), side by side. The network always runs:
--- nll needs its logits.
function M.chunk_features(model, x, which)
    which = which or "network" -- runs made before anomaly.features embedded the network output alone
    local logits = model:forward(x):to("cpu")
    local parts = {}
    if which == "network" or which == "both" then parts[#parts + 1] = model.children.flatten.output:to("cpu") end
    if which ~= "network" then
        local N, F, T = x:size(1), x:size(3), x:size(4)
        local s = x:reshape{ N, F, T }:to("cpu")
        if which == "levelled" then s = s - s:mean(2):reshape{ N, 1, T } end
        local mean = s:mean(3)
        local var = ((s * s):mean(3) - mean * mean):relu()
        parts[#parts + 1], parts[#parts + 2] = mean, var:sqrt()
        if which == "moments" or which == "levelled" then
            local d = s - mean:reshape{ N, F, 1 }
            local d2 = d * d
            local m2 = d2:mean(3)
            -- A bin that does not vary gets -3 (its fourth moment is 0 too), not a division by zero.
            parts[#parts + 1] = (d2 * d2):mean(3) / (m2 * m2 + 1e-12) - 3
        end
    end
    if #parts == 1 then return parts[1], logits end
    local width = 0
    for _, p in ipairs(parts) do width = width + p:size(2) end
    local e, at = mt.empty{ x:size(1), width }, 1
    for _, p in ipairs(parts) do
        e:narrow(2, at, p:size(2)):copy(p)
        at = at + p:size(2)
    end
    return e, logits
end

--- Pooled embeddings (M.chunk_features) and head outputs of every clip a
--- chunk loader yields (the mean over a clip's chunks), on the CPU, and
--- each clip's log-mel frames and frame-to-frame differences as rows
--- (machrt.anomaly.frames; lists by clip).
function M.embed(model, front, loader, n, which)
    model:evaluate()
    local emb, logits, seen
    local rows = { frames = {}, deltas = {} }
    for _, batch in loader:epoch(0) do
        for _, why in ipairs(batch.skipped) do log.info("skipped %s", why) end
        if batch.chunks then
            local x = front(batch.chunks)
            local e, out = M.chunk_features(model, x, which)
            local fr = frames.of_chunks(x)
            local per = { frames = x:size(4), deltas = x:size(4) - 1 }
            if not emb then
                emb, logits, seen = mt.zeros{ n, e:size(2) }, mt.zeros{ n, out:size(2) }, {}
            end
            local at = 1
            for j, i in ipairs(batch.indices) do
                local c = batch.counts[j]
                emb:select(1, i):copy(e:narrow(1, at, c):mean(1))
                logits:select(1, i):copy(out:narrow(1, at, c):mean(1))
                for _, kind in ipairs(frames.KINDS) do
                    rows[kind][i] = fr[kind]:narrow(1, (at - 1) * per[kind] + 1, c * per[kind]):clone()
                end
                seen[i] = true
                at = at + c
            end
        end
    end
    model:training()
    for i = 1, n do
        if not (seen and seen[i]) then fail("embedding: clip %d could not be read, so it has no score", i) end
    end
    return { embedding = emb, logits = logits, frames = rows.frames, deltas = rows.deltas }
end

-- Item numbers of the clips of `items` that belong to machine k.
local function clips_of(items, k)
    local idx = {}
    for i, m in ipairs(items.index) do if m == k then idx[#idx + 1] = i end end
    return idx
end

--- The rows idx of a 2-D tensor, as a new tensor.
function M.take(t, idx)
    local out = mt.empty{ #idx, t:size(2) }
    for j, i in ipairs(idx) do out:select(1, j):copy(t:select(1, i)) end
    return out
end

--- The statistics of normal rows x (embeddings, or frames): each
--- dimension's spread (scale), the mean and, with two rows or more, the
--- Gaussian, all of the rows divided by scale. Dimensions in different
--- units (a network's activations, decibels) then weigh alike in the cosine
--- score and in the shrinkage target of the covariance.
function M.stats_of(cfg, x)
    local n = x:size(1)
    local mean = x:mean(1)
    local scale = mt.ones{ x:size(2) }
    if n >= 2 then
        local d = x - mean:reshape{ 1, -1 }
        local sd = (d * d):mean(1):sqrt()
        -- A dimension that does not vary keeps a floor in its own units, not a division by zero.
        scale = sd + mean:abs() * 1e-6 + 1e-12
    end
    local z = x / scale:reshape{ 1, -1 }
    local s = { mean = z:mean(1), scale = scale, clips = n }
    if n >= 2 then
        local g = nn.gaussian_fit(z, { shrinkage = cfg.anomaly.shrinkage })
        s.gaussian, s.shrinkage = nn.Mahalanobis(g.mean, g.precision), g.shrinkage
        s.precision = g.precision
    end
    return s
end

--- Mahalanobis (nil without a Gaussian) and cosine scores of the rows of
--- x (embeddings of one machine) against its statistics s = {mean, scale,
--- gaussian}.
function M.score_rows(s, x)
    if s.scale then x = x / s.scale:reshape{ 1, -1 } end
    local d = s.gaussian and s.gaussian:forward(x):totable()
    local mean = s.mean:reshape{ 1, -1 }
    local cos = (x * mean):sum(2) / ((x * x):sum(2):sqrt() * math.sqrt((mean * mean):sum()) + 1e-12)
    local c = {}
    for j, v in ipairs(cos:totable()) do c[j] = 1 - v end
    return d, c
end

--- The scores that each ensemble averages, each standardised by its
--- machine's held-out normal scores: ensemble (the clip's moments, its
--- frames' Gaussian and its differences'), mixture_ensemble (the frames'
--- mixture in place of their Gaussian).
M.ENSEMBLES = {
    ensemble = { "mahalanobis", "frames", "deltas" },
    mixture_ensemble = { "mahalanobis", "mixture", "deltas" },
}

--- Every score some ensemble averages (their standardisations are saved).
M.ENSEMBLE_PARTS = { "mahalanobis", "frames", "deltas", "mixture" }

-- The ensemble `name` of n clips from their scores (lists by name), each
-- part standardised by norm[part] = {mean, sd}; nil when a part is missing.
local function ensemble(name, norm, scores, n)
    local parts = M.ENSEMBLES[name]
    for _, part in ipairs(parts) do
        if not (scores[part] and norm and norm[part]) then return nil end
    end
    local out = {}
    for j = 1, n do
        local sum = 0
        for _, part in ipairs(parts) do sum = sum + (scores[part][j] - norm[part].mean) / norm[part].sd end
        out[j] = sum / #parts
    end
    return out
end

-- Every ensemble of n clips into the score lists `scores`.
local function add_ensembles(norm, scores, n)
    for name in pairs(M.ENSEMBLES) do scores[name] = ensemble(name, norm, scores, n) end
end

-- The statistics of one machine: its normal clips' embeddings x and, when
-- given, their frame rows fr = {frames = list, deltas = list}.
local function machine_stats(cfg, x, fr)
    local s = M.stats_of(cfg, x)
    if fr and #fr.frames > 0 then
        for _, kind in ipairs(frames.KINDS) do s[kind] = M.stats_of(cfg, frames.stack(fr[kind])) end
        s.mixture = frames.can_fit_mixture(fr.frames) and frames.fit_mixture(fr.frames) or nil
    end
    return s
end

--- The scores of clips of one machine against its statistics s: x their
--- embeddings, fr their frame rows (or nil). {mahalanobis, cosine, frames,
--- deltas, mixture, ensemble, mixture_ensemble}, a list each; a score s
--- cannot give is nil (the ensembles need s.norm, the standardisation M.fit
--- adds).
function M.score_machine(s, x, fr)
    local out = {}
    out.mahalanobis, out.cosine = M.score_rows(s, x)
    for _, kind in ipairs(frames.KINDS) do
        if fr and s[kind] and s[kind].gaussian then
            out[kind] = {}
            for j, rows in ipairs(fr[kind]) do out[kind][j] = frames.score(s[kind], rows) end
        end
    end
    if fr and s.mixture then
        out.mixture = {}
        for j, rows in ipairs(fr.frames) do out.mixture[j] = frames.score_mixture(s.mixture, rows) end
    end
    if s.norm then add_ensembles(s.norm, out, x:size(1)) end
    return out
end

-- The frame rows of clips idx of an embedding table e (or of frame rows
-- {frames, deltas}), or nil without them.
local function frame_rows(e, idx)
    if not e.frames then return nil end
    local fr = {}
    for _, kind in ipairs(frames.KINDS) do
        fr[kind] = {}
        for j, i in ipairs(idx) do fr[kind][j] = e[kind][i] end
    end
    return fr
end

-- Each normal clip's scores without the clip itself: 5 folds of the
-- machine's clips (fewer with fewer clips), the statistics of the other
-- folds scoring the held-out one (in-sample distances would be too small,
-- and every new clip would look anomalous). With fewer than 3 clips there
-- is nothing to hold out: in-sample scores, said once.
local function held_out_scores(cfg, m, x, fr, s)
    local n = x:size(1)
    if n < 3 then
        log.info("machine %s: %d normal training clips, too few to hold one out: its threshold comes "
                 .. "from in-sample scores", m, n)
        return M.score_machine(s, x, fr)
    end
    local folds, out = math.min(5, n), {}
    for f = 0, folds - 1 do
        local rest, held = {}, {}
        for j = 1, n do
            if (j - 1) % folds == f then held[#held + 1] = j else rest[#rest + 1] = j end
        end
        local got = M.score_machine(machine_stats(cfg, M.take(x, rest), fr and frame_rows(fr, rest)),
                                    M.take(x, held), fr and frame_rows(fr, held))
        for name, list in pairs(got) do
            out[name] = out[name] or {}
            for a, j in ipairs(held) do out[name][j] = list[a] end
        end
    end
    return out
end

-- The mean and spread of a list of normal scores (the spread floored, so
-- that a score every normal clip gives alike does not divide by zero).
local function standardisation(list)
    local n, sum, sum2 = #list, 0, 0
    for _, v in ipairs(list) do sum = sum + v end
    local mean = sum / n
    for _, v in ipairs(list) do sum2 = sum2 + (v - mean) ^ 2 end
    local sd = math.sqrt(sum2 / math.max(n - 1, 1))
    return { mean = mean, sd = math.max(sd, 1e-6 * math.max(math.abs(mean), 1)) }
end

--- Per machine, from its normal training embeddings and frames: the mean
--- (cosine score), with two clips or more the Gaussian (Mahalanobis score),
--- the Gaussians of its frames and of their differences, and each normal
--- clip's held-out scores (thresholds; their mean and spread standardise
--- the ensemble's parts). A machine with a single normal clip has no
--- covariance: with anomaly.score = mahalanobis or ensemble that is an
--- error naming it.
function M.fit(cfg, split, e)
    local stats = {}
    for k, m in ipairs(split.machines) do
        local idx = clips_of(split.train, k)
        local x, fr = M.take(e.embedding, idx), frame_rows(e, idx)
        local s = machine_stats(cfg, x, fr)
        if not s.gaussian then
            if cfg.anomaly.score == "mahalanobis" or M.ENSEMBLES[cfg.anomaly.score] then
                fail("machine %s has a single normal training clip: the %s score needs at least 2 "
                     .. "for a covariance (add clips, or use anomaly.score = cosine, frames, deltas, mixture "
                     .. "or nll)",
                     m, cfg.anomaly.score)
            end
            log.info("machine %s has a single normal training clip: no Mahalanobis score for it", m)
        end
        local h = held_out_scores(cfg, m, x, fr, s)
        local norm = {}
        for _, name in ipairs(M.ENSEMBLE_PARTS) do norm[name] = h[name] and standardisation(h[name]) end
        add_ensembles(norm, h, x:size(1))
        s.held_out, s.norm = h, next(norm) and norm or nil
        stats[m] = s
    end
    return stats
end

--- The scores of the normal training clips that thresholds are chosen
--- from, each computed without the clip itself (M.fit's held-out scores).
--- The network saw every clip, so nll stays in-sample.
function M.normal_scores(cfg, split, stats, e)
    local which = cfg.anomaly.score
    if which == "nll" then return M.scores(stats, split, split.train, e).nll end
    local out = {}
    for k, m in ipairs(split.machines) do
        local list = stats[m].held_out[which]
        if not list then fail("machine %s has no %s score for its normal clips", m, which) end
        for j, i in ipairs(clips_of(split.train, k)) do out[i] = list[j] end
    end
    return out
end

--- Every score of every clip of `items` from its embeddings and frames `e`:
--- mahalanobis (distance to the machine's Gaussian of clip embeddings),
--- cosine (1 - cosine similarity to the machine's mean embedding), frames
--- and deltas (mean squared distance of the clip's log-mel frames, and of
--- their differences, to the machine's Gaussian of normal ones), mixture
--- (minus the mean log-density of the clip's levelled frames under the
--- machine's mixture of normal ones), ensemble and mixture_ensemble (the
--- means of M.ENSEMBLES' parts, each standardised by the machine's
--- held-out normal scores) and nll (minus the log of the
--- classifier's probability of the clip's machine). A higher score is more
--- anomalous. A score a machine cannot give is nil in its list.
function M.scores(stats, split, items, e)
    local out = { mahalanobis = {}, cosine = {}, frames = {}, deltas = {}, mixture = {}, ensemble = {},
                  mixture_ensemble = {}, nll = {} }
    for k, m in ipairs(split.machines) do
        local idx = clips_of(items, k)
        if #idx > 0 then
            local got = M.score_machine(stats[m], M.take(e.embedding, idx), frame_rows(e, idx))
            for name, list in pairs(got) do
                for j, i in ipairs(idx) do out[name][i] = list[j] end
            end
        end
    end
    for i, row in ipairs(e.logits:totable()) do out.nll[i] = M.nll(row, items.index[i]) end
    return out
end

--- Minus the log-softmax of logits row `row` at class k.
function M.nll(row, k)
    local top = -math.huge
    for _, v in ipairs(row) do top = math.max(top, v) end
    local z = 0
    for _, v in ipairs(row) do z = z + math.exp(v - top) end
    return top + math.log(z) - row[k]
end

return M
