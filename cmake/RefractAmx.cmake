# Should ggml's AMX kernels be compiled into this build? (issue 26)
#
# ggml compiles its AMX matmul (ggml-cpu/amx/) whenever the target defines __AMX_INT8__ and
# __AVX512VNNI__, e.g. with -march=native on a Sapphire Rapids or newer Xeon. GCC 12 (Debian
# 12's compiler) miscompiles its tile configuration (see cmake/amx_tilecfg_probe.cpp), so every
# AMX matmul dies with SIGILL on the very CPUs it is meant for. The decision here is made from
# what the compiler emits, not from a version table:
#
#   target has AMX?   does the compiler, given the target flags, define __AMX_INT8__ and
#                     __AVX512VNNI__ (what ggml keys its AMX code on)?
#   compiler check    compile the probe to assembly at -O2 and -O3 with -mamx-tile: "ok" when
#                     the tile-config stores survive, "miscompiles" when they are dropped,
#                     "unsupported" when the compiler cannot compile AMX intrinsics at all
#   REFRACT_AMX       AUTO (default): AMX in only when the target has it and the check is ok;
#                     OFF: never; ON: required (configure fails when it cannot be had)
#
# When the target has AMX but it stays out, the build keeps -march=native and every other
# native feature (AVX-512 included) and adds -mno-amx-tile -mno-amx-int8 -mno-amx-bf16 to
# ggml-cpu and the extension (GCC and Clang give explicit -mno-* precedence over -march).
# Where AMX goes in, refract proves ggml's AMX matmul at run time in a child process once per
# machine and build (src/refract/probe.py) before any model work.
#
# Script mode, for tests and by hand (runs on any x86 machine, AMX or not):
#   cmake -DREFRACT_CXX=g++ [-DREFRACT_AMX_TARGET_FLAGS=-march=sapphirerapids]
#         [-DREFRACT_AMX=AUTO|ON|OFF] -P cmake/RefractAmx.cmake
# prints `compiler_check=...`, `target_has_amx=...`, `enabled=...`, `reason=...`.

set(_REFRACT_AMX_DIR "${CMAKE_CURRENT_LIST_DIR}")

# out_var: ok | miscompiles | unsupported
function(refract_amx_compiler_check compiler workdir out_var)
  set(_src "${_REFRACT_AMX_DIR}/amx_tilecfg_probe.cpp")
  file(MAKE_DIRECTORY "${workdir}")
  set(_result "ok")
  foreach(_opt -O2 -O3)
    set(_asm "${workdir}/amx_tilecfg_probe${_opt}.s")
    file(REMOVE "${_asm}")
    execute_process(
      COMMAND "${compiler}" -x c++ -std=c++17 ${_opt} -mamx-tile -S -o "${_asm}" "${_src}"
      RESULT_VARIABLE _rc OUTPUT_QUIET ERROR_QUIET)
    if(NOT _rc EQUAL 0 OR NOT EXISTS "${_asm}")
      set(${out_var} "unsupported" PARENT_SCOPE)
      return()
    endif()
    file(READ "${_asm}" _text)
    string(FIND "${_text}" "ldtilecfg" _has_ldtilecfg)
    string(FIND "${_text}" "refract_amx_probe_rows" _has_rows)
    string(FIND "${_text}" "refract_amx_probe_colsb" _has_colsb)
    if(_has_ldtilecfg EQUAL -1)
      set(${out_var} "unsupported" PARENT_SCOPE)
      return()
    endif()
    if(_has_rows EQUAL -1 OR _has_colsb EQUAL -1)
      set(_result "miscompiles")
    endif()
  endforeach()
  set(${out_var} "${_result}" PARENT_SCOPE)
endfunction()

# Does `compiler` with `flags` (a list) target a CPU with the AMX ggml uses?
function(refract_amx_target_has_amx compiler flags out_var)
  execute_process(
    COMMAND "${compiler}" ${flags} -dM -E -x c++ -
    INPUT_FILE /dev/null
    OUTPUT_VARIABLE _defs RESULT_VARIABLE _rc ERROR_QUIET)
  if(_rc EQUAL 0 AND _defs MATCHES "__AMX_INT8__" AND _defs MATCHES "__AMX_TILE__"
     AND _defs MATCHES "__AVX512VNNI__")
    set(${out_var} TRUE PARENT_SCOPE)
  else()
    set(${out_var} FALSE PARENT_SCOPE)
  endif()
endfunction()

# Sets <prefix>_COMPILER_CHECK, <prefix>_TARGET, <prefix>_ENABLED (TRUE/FALSE), <prefix>_REASON.
function(refract_amx_decide prefix compiler compiler_desc target_has_amx request workdir)
  refract_amx_compiler_check("${compiler}" "${workdir}" _check)
  string(TOUPPER "${request}" request)
  if(NOT request MATCHES "^(AUTO|ON|OFF)$")
    message(FATAL_ERROR "REFRACT_AMX must be AUTO, ON or OFF (got '${request}')")
  endif()
  set(_enabled FALSE)
  if(NOT target_has_amx)
    set(_reason "the target CPU has no AMX (ggml's AMX kernels are not compiled)")
    if(request STREQUAL "ON")
      message(FATAL_ERROR "REFRACT_AMX=ON, but the target CPU has no AMX")
    endif()
  elseif(request STREQUAL "OFF")
    set(_reason "REFRACT_AMX=OFF: AMX left out, every other native feature kept")
  elseif(NOT _check STREQUAL "ok")
    set(_reason "${compiler_desc} ${_check} ggml's AMX tile configuration (configure-time check, cmake/RefractAmx.cmake): AMX left out, every other native feature (AVX-512 included) kept; a compiler that passes the check (e.g. clang) builds it in")
    if(request STREQUAL "ON")
      message(FATAL_ERROR "REFRACT_AMX=ON, but ${compiler_desc} ${_check} ggml's AMX tile configuration (cmake/amx_tilecfg_probe.cpp); use another compiler (e.g. CXX=clang++ CC=clang) or REFRACT_AMX=AUTO")
    endif()
  else()
    set(_enabled TRUE)
    set(_reason "the target CPU has AMX and ${compiler_desc} passes the tile-config check: ggml's AMX kernels are in, proved at run time by a matmul probe in a child process")
  endif()
  set(${prefix}_COMPILER_CHECK "${_check}" PARENT_SCOPE)
  set(${prefix}_TARGET "${target_has_amx}" PARENT_SCOPE)
  set(${prefix}_ENABLED "${_enabled}" PARENT_SCOPE)
  set(${prefix}_REASON "${_reason}" PARENT_SCOPE)
endfunction()

if(CMAKE_SCRIPT_MODE_FILE STREQUAL CMAKE_CURRENT_LIST_FILE)
  if(NOT DEFINED REFRACT_CXX)
    message(FATAL_ERROR "usage: cmake -DREFRACT_CXX=<c++ compiler> [-DREFRACT_AMX_TARGET_FLAGS=-march=native] [-DREFRACT_AMX=AUTO] -P RefractAmx.cmake")
  endif()
  if(NOT DEFINED REFRACT_AMX_TARGET_FLAGS)
    set(REFRACT_AMX_TARGET_FLAGS "-march=native")
  endif()
  if(NOT DEFINED REFRACT_AMX)
    set(REFRACT_AMX AUTO)
  endif()
  separate_arguments(_flags UNIX_COMMAND "${REFRACT_AMX_TARGET_FLAGS}")
  refract_amx_target_has_amx("${REFRACT_CXX}" "${_flags}" _target)
  string(RANDOM LENGTH 8 _tag)
  set(_work "/tmp/refract-amx-check-${_tag}")
  refract_amx_decide(_amx "${REFRACT_CXX}" "${REFRACT_CXX}" "${_target}" "${REFRACT_AMX}" "${_work}")
  file(REMOVE_RECURSE "${_work}")
  message("compiler_check=${_amx_COMPILER_CHECK}")
  message("target_has_amx=${_amx_TARGET}")
  message("enabled=${_amx_ENABLED}")
  message("reason=${_amx_REASON}")
endif()
