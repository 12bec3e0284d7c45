-- Frame-level scores of the embedding detector. A fault that comes and goes
-- (a knock, a crackle, a missed valve cycle) barely moves a clip's mean and
-- spread per log-mel bin, but its frames lie where the machine's normal
-- frames do not: each machine gets a Gaussian of its normal clips' log-mel
-- frames and one of their frame-to-frame differences, and a clip's score is
-- the mean over its frames of the squared Mahalanobis distance.
--
--   local rows = frames.of_chunks(x)            -- x {N, 1, F, T} -> {frames = N T x F, deltas = N (T - 1) x F}
--   local all = frames.stack(list)               -- the rows of several clips, one after the other
--   local score = frames.score(stats, rows)      -- stats: embedding.stats_of of normal rows
local ae = require "machrt.anomaly.autoencoder"

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

return M
