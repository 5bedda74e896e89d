# AgentCompressConfig.cmake: lets a CMake project use libagentcompress in one line,
#
#   find_package(AgentCompress REQUIRED)
#   target_link_libraries(my_app PRIVATE AgentCompress::agentcompress)
#
# ffi/install.sh installs this file as PREFIX/lib/cmake/AgentCompress/AgentCompressConfig.cmake
# (pass -DCMAKE_PREFIX_PATH=PREFIX when PREFIX is not a system prefix). It defines the imported
# target AgentCompress::agentcompress (the shared library; AgentCompress::agentcompress_static
# for the static one, when installed) and AgentCompress_INCLUDE_DIRS / AgentCompress_LIBRARIES.

get_filename_component(_ac_prefix "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)

find_path(AgentCompress_INCLUDE_DIR agentcompress.h
  HINTS "${_ac_prefix}/include" NO_DEFAULT_PATH)
find_library(AgentCompress_LIBRARY NAMES agentcompress
  HINTS "${_ac_prefix}/lib" NO_DEFAULT_PATH)
find_library(AgentCompress_STATIC_LIBRARY NAMES libagentcompress.a
  HINTS "${_ac_prefix}/lib" NO_DEFAULT_PATH)

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(AgentCompress
  REQUIRED_VARS AgentCompress_LIBRARY AgentCompress_INCLUDE_DIR)

if(AgentCompress_FOUND AND NOT TARGET AgentCompress::agentcompress)
  add_library(AgentCompress::agentcompress SHARED IMPORTED)
  set_target_properties(AgentCompress::agentcompress PROPERTIES
    IMPORTED_LOCATION "${AgentCompress_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${AgentCompress_INCLUDE_DIR}")
  if(AgentCompress_STATIC_LIBRARY)
    find_package(Threads REQUIRED)
    add_library(AgentCompress::agentcompress_static STATIC IMPORTED)
    set_target_properties(AgentCompress::agentcompress_static PROPERTIES
      IMPORTED_LOCATION "${AgentCompress_STATIC_LIBRARY}"
      INTERFACE_INCLUDE_DIRECTORIES "${AgentCompress_INCLUDE_DIR}"
      INTERFACE_LINK_LIBRARIES "Threads::Threads;${CMAKE_DL_LIBS};m")
  endif()
  set(AgentCompress_INCLUDE_DIRS "${AgentCompress_INCLUDE_DIR}")
  set(AgentCompress_LIBRARIES AgentCompress::agentcompress)
endif()

unset(_ac_prefix)
