# Installation and the package files: `cmake --install BUILD [--prefix DIR]`.
include(CMakePackageConfigHelpers)

set(VAE_CMAKE_PACKAGE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/vae)

install(TARGETS vae_core EXPORT vaeTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(TARGETS vae RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
# The public headers: the source tree's and any generated into the build tree.
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/vae DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
        FILES_MATCHING PATTERN "*.h")
if(EXISTS ${PROJECT_BINARY_DIR}/include/vae)
  install(DIRECTORY ${PROJECT_BINARY_DIR}/include/vae DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
          FILES_MATCHING PATTERN "*.h")
endif()

install(EXPORT vaeTargets NAMESPACE vae:: DESTINATION ${VAE_CMAKE_PACKAGE_DIR})
# Where the openblas.pc that the build used lies (vaeConfig.cmake looks there first).
pkg_get_variable(OPENBLAS_PC_DIR openblas pcfiledir)
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/vaeConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/package/vaeConfig.cmake
                              INSTALL_DESTINATION ${VAE_CMAKE_PACKAGE_DIR})
# 0.x: a minor version may change the API.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/package/vaeConfigVersion.cmake
                                 VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/package/vaeConfig.cmake ${PROJECT_BINARY_DIR}/package/vaeConfigVersion.cmake
        DESTINATION ${VAE_CMAKE_PACKAGE_DIR})

# vae.pc, relocatable: the prefix is found from the file's own place.
file(RELATIVE_PATH VAE_PC_RELATIVE_PREFIX /prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig /prefix)
set(VAE_PC_LIBS "-L${OPENBLAS_LIBDIR} -Wl,-rpath,${OPENBLAS_LIBDIR} -lopenblas -lm")
if(OpenMP_C_FOUND)
  string(APPEND VAE_PC_LIBS " ${OpenMP_C_FLAGS}")
endif()
if(VAE_HAVE_ONEDNN)
  string(APPEND VAE_PC_LIBS " ${ONEDNN_LIBRARY}")
endif()
string(APPEND VAE_PC_LIBS " -lpthread")
if(VAE_HAVE_CUDA)
  string(APPEND VAE_PC_LIBS " -L${CUDAToolkit_LIBRARY_DIR} -lcudart_static -lcublas -lcublasLt -ldl -lrt -lstdc++")
endif()
if(VAE_HAVE_MPI)
  foreach(library ${MPI_C_LIBRARIES})
    string(APPEND VAE_PC_LIBS " ${library}")
  endforeach()
endif()
if(VAE_HAVE_NCCL)
  string(APPEND VAE_PC_LIBS " ${NCCL_LIBRARY}")
endif()
configure_file(${PROJECT_SOURCE_DIR}/cmake/vae.pc.in ${PROJECT_BINARY_DIR}/package/vae.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/package/vae.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
