# aquin_add_plugin(<target> SOURCES ... [OUTPUT_DIR dir] [NO_INSTALL])
#
# Builds an analyzer or model-adapter plugin: a shared library linked to the SDK with hidden
# visibility (only aquin_plugin_entry is exported) and no undefined symbols, placed where the
# host discovers it.
function(aquin_add_plugin target)
  cmake_parse_arguments(ARG "NO_INSTALL" "OUTPUT_DIR" "SOURCES;LIBRARIES" ${ARGN})
  add_library(${target} MODULE ${ARG_SOURCES})
  if(TARGET aquin_sdk)
    target_link_libraries(${target} PRIVATE aquin_sdk ${ARG_LIBRARIES})
  else()
    target_link_libraries(${target} PRIVATE aquin::sdk ${ARG_LIBRARIES})
  endif()
  if(NOT ARG_OUTPUT_DIR)
    if(DEFINED AQUIN_BUILD_PLUGIN_DIR)
      set(ARG_OUTPUT_DIR ${AQUIN_BUILD_PLUGIN_DIR})
    else()
      set(ARG_OUTPUT_DIR ${CMAKE_CURRENT_BINARY_DIR})
    endif()
  endif()
  set_target_properties(${target} PROPERTIES
    PREFIX "lib"
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON
    LIBRARY_OUTPUT_DIRECTORY ${ARG_OUTPUT_DIR})
  target_link_options(${target} PRIVATE -Wl,--no-undefined)
  if(NOT ARG_NO_INSTALL AND DEFINED AQUIN_PLUGIN_INSTALL_DIR)
    install(TARGETS ${target} LIBRARY DESTINATION ${AQUIN_PLUGIN_INSTALL_DIR})
  endif()
endfunction()
