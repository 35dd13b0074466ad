# Third-party dependencies, all from Debian packages (scripts/setup.sh installs them).
find_package(Torch REQUIRED)
find_package(Boost 1.74 REQUIRED COMPONENTS program_options)
find_package(RapidJSON REQUIRED)
find_package(spdlog REQUIRED)
find_package(Threads REQUIRED)
# The tokenizers (sdk/src/tokenizer) need PCRE2 for the pre-tokenizer regexes (\p{L} with UTF + UCP)
# and utf8proc for Unicode normalisation forms, categories and case mapping. Both stay private to
# the SDK: no public header names their types.
find_package(PkgConfig REQUIRED)
pkg_check_modules(PCRE2 REQUIRED IMPORTED_TARGET libpcre2-8)
pkg_check_modules(UTF8PROC REQUIRED IMPORTED_TARGET libutf8proc)

if(NOT TARGET aquin::rapidjson)
  add_library(aquin_rapidjson INTERFACE)
  add_library(aquin::rapidjson ALIAS aquin_rapidjson)
  target_include_directories(aquin_rapidjson SYSTEM INTERFACE ${RapidJSON_INCLUDE_DIRS} ${RAPIDJSON_INCLUDE_DIRS})
  target_compile_definitions(aquin_rapidjson INTERFACE RAPIDJSON_HAS_STDSTRING=1)
endif()

# libtorch's exported target drags in -D_GLIBCXX_USE_CXX11_ABI and CUDA bits we do not need on
# every target; we link it only where tensors are touched.
