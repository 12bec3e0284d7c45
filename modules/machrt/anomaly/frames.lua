-- Frame-level scores of the embedding detector. A fault that comes and goes
-- (a knock, a crackle, a missed valve cycle) barely moves a clip's mean and
-- spread per log-mel bin, but its frames lie where the machine's normal
-- frames do not: each machine gets a Gaussian of its normal clips' log-mel
-- frames and one of their frame-to-frame differences, and a clip's score is
-- the mean over its frames of the squared Mahalanobis distance. The
-- mixture score models the frames' several normal states (speeds, loads,
-- the phases of a cycle) with a mixture of diagonal Gaussians instead
-- (machrt.anomaly.mixture), on frames levelled first: each frame minus its
-- own mean over the bins, so that how loud a machine runs today (its load,
-- the microphone's distance) drops out and the spectrum's shape remains.
--
--   local rows = frames.of_chunks(x)            -- x {N, 1, F, T} -> {frames = N T x F, deltas = N (T - 1) x F}
--   local all = frames.stack(list)               -- the rows of several clips, one after the other
--   local score = frames.score(stats, rows)      -- stats: embedding.stats_of of normal rows
--   local m = frames.fit_mixture(list)          -- the mixture of a machine's normal clips' frame rows
--   local score = frames.score_mixture(m, rows) -- minus the mean log-density of a clip's levelled frames
local log = require "machrt.log"
local ae = require "machrt.anomaly.autoencoder"
local mixture = require "machrt.anomaly.mixture"

local M = {}

--- The two kinds of frame rows, in the order the scores are named.
M.KINDS = { "frames", "deltas" }

local function fail(fmt, ...) error(string.format(fmt, ...), 0) end

--- The log-mel frames of a front-end output x ({N, 1, F, T}) as rows
--- (chunk after chunk) and their differences to the frame before.
function M.of_chunks(x)
    local T = x:size(4)
    if T < 2 then fail("frame scores: a chunk of %d log-mel frame has no frame-to-frame difference", T) end
    x = x:to("cpu")
    local deltas = x:narrow(4, 2, T - 1) - x:narrow(4, 1, T - 1)
    return { frames = ae.frame_vectors(x, 1), deltas = ae.frame_vectors(deltas, 1) }
end

--- The rows of a list of 2-D tensors (same width), one after the other.
M.stack = ae.stack_rows

--- The score of one clip's rows against the statistics of normal rows
--- ({scale, gaussian}): the mean squared Mahalanobis distance.
function M.score(s, rows)
    local d = s.gaussian:forward(rows / s.scale:reshape{ 1, -1 })
    return (d * d):mean()
end

--- Each row minus its own mean over the columns (a frame's level in dB).
function M.levelled(rows)
    return rows - rows:mean(2):reshape{ -1, 1 }
end

--- Components of the frame mixture: chosen on a development corpus (8 of
--- 4, 8 and 16 measured best; see the README).
M.MIXTURE_COMPONENTS = 8

--- Whether the frame rows of a list of clips are enough for the mixture;
--- when not, says so once (its score is then missing for that machine).
function M.can_fit_mixture(list)
    local n = 0
    for _, rows in ipairs(list) do n = n + rows:size(1) end
    if n >= M.MIXTURE_COMPONENTS then return true end
    log.once("mixture frames", "a machine has %d normal log-mel frames, fewer than the %d components of the "
             .. "frame mixture: no mixture score for it", n, M.MIXTURE_COMPONENTS)
    return false
end

--- The mixture of the levelled frame rows of a machine's normal clips
--- (a list of tensors): {scale (each bin's spread, so that the
--- regularisation weighs the bins alike), weights, means, variances}.
function M.fit_mixture(list)
    local x = M.levelled(M.stack(list))
    local n = x:size(1)
    if n < M.MIXTURE_COMPONENTS then
        fail("mixture frame score: %d normal frames cannot fit %d components", n, M.MIXTURE_COMPONENTS)
    end
    local mean = x:mean(1)
    local d = x - mean:reshape{ 1, -1 }
    -- A bin that does not vary keeps a floor, not a division by zero.
    local scale = (d * d):mean(1):sqrt() + 1e-6
    local g = mixture.fit(x / scale:reshape{ 1, -1 }, { components = M.MIXTURE_COMPONENTS })
    g.scale = scale
    return g
end

--- The mixture score of one clip's frame rows: minus the mean log-density
--- of its levelled frames under the machine's mixture m.
function M.score_mixture(m, rows)
    return mixture.score(m, M.levelled(rows) / m.scale:reshape{ 1, -1 })
end

return M
