-- Command lines of the scripts: `--key value` and `--key=value` options,
-- `--help`, and usage errors as one line on stderr, exit status 2, never a
-- traceback.
--
--   local cli = require "machrt.cli"
--   local opts = cli.parse(arg, {
--       name = "predict", usage = USAGE,            -- printed by --help (stdout, exit 0)
--       options = { run = "value", input = "list", profile = "flag" },
--   })
--   -- opts.run = "dir", opts.input = {"a", "b"} (always a list), opts.profile = true
--   cli.fail(spec, "give one of --run or --scorer")  -- one line on stderr, exit 2
--
-- Options are named with dashes on the command line (--data-folder) and keep
-- them in the table (opts["data-folder"]). Arguments that are not options go
-- to opts.positional, in order, where spec.positional allows them ("-",
-- standard input, is one).

local M = {}

--- Writes "<name>: <msg>" as one line on stderr and exits with status 2.
function M.fail(spec, msg)
    io.stderr:write(spec.name, ": ", msg, "; --help shows the usage\n")
    os.exit(2)
end

local function is_help(a) return a == "--help" or a == "-h" end

--- Parses argv (a list of strings) with spec (see the top of the file).
function M.parse(argv, spec)
    local kinds = spec.options
    local opts, positional = {}, {}
    for name, kind in pairs(kinds) do
        if kind == "list" then opts[name] = {} end
    end
    local i = 1
    while i <= #argv do
        local a = argv[i]
        if is_help(a) then
            io.write(spec.usage)
            if spec.usage:sub(-1) ~= "\n" then io.write("\n") end
            os.exit(0)
        end
        local key, value = a:match("^%-%-([%w][%w-]*)=(.*)$")
        key = key or a:match("^%-%-([%w][%w-]*)$")
        if not key then
            if (a ~= "-" and a:sub(1, 1) == "-") or not spec.positional then
                M.fail(spec, "cannot read argument '" .. a .. "'")
            end
            positional[#positional + 1] = a
        else
            local kind = kinds[key] or M.fail(spec, "unknown option --" .. key)
            if kind == "flag" then
                if value then M.fail(spec, "--" .. key .. " takes no value") end
                opts[key] = true
            else
                if not value then
                    i = i + 1
                    value = argv[i]
                    if value == nil or is_help(value) then M.fail(spec, "--" .. key .. " needs a value") end
                end
                if kind == "list" then opts[key][#opts[key] + 1] = value else opts[key] = value end
            end
        end
        i = i + 1
    end
    opts.positional = positional
    return opts
end

--- The integer value of option `key` (nil when absent), at least `min`
--- when given; a usage error otherwise.
function M.integer(spec, opts, key, min)
    local text = opts[key]
    if text == nil then return nil end
    local v = math.tointeger(tonumber(text))
    if not v or (min and v < min) then
        M.fail(spec, string.format("--%s needs an integer%s, got '%s'", key,
                                   min and (" of at least " .. min) or "", text))
    end
    return v
end

return M
