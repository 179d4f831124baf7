-- raftcache client API: PUT/GET /v1/keys/{key}.
-- Args (after --): mode (put|get|mix) keys value_size consistency read_ratio
dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")

local mode, nkeys, value, query, read_ratio
local paths = {}

function init(args)
  seed_thread()
  mode = args[1] or "put"
  nkeys = tonumber(args[2] or "10000")
  value = string.rep("v", tonumber(args[3] or "100"))
  query = "?consistency=" .. (args[4] or "linearizable")
  read_ratio = tonumber(args[5] or "0.9")
  for i = 1, nkeys do
    paths[i] = string.format("/v1/keys/k%07d", i - 1)
  end
end

function request()
  local path = paths[math.random(nkeys)]
  if mode == "get" or (mode == "mix" and math.random() < read_ratio) then
    return wrk.format("GET", path .. query)
  end
  return wrk.format("PUT", path, nil, value)
end
