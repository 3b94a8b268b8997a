"""Headless OpenGL for Live2D rendering: an EGL surfaceless context and an RGBA framebuffer.

Works with Mesa's llvmpipe on machines without a display or GPU (Debian: ``libegl1 libegl-mesa0 libgl1
libopengl0 libgl1-mesa-dri``) and with GPU EGL drivers. ``live2d`` must be imported before the first context is
created (otherwise the Cubism renderer aborts the process), and a context must not be created before a
``fork``: create it lazily inside each rendering process.
"""

from __future__ import annotations

import ctypes
import os

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

import live2d  # noqa: E402,F401  (imported before any GL context exists, see the module docstring)
import numpy as np  # noqa: E402
from OpenGL import EGL, GL  # noqa: E402

from core.errors import UserFacingError  # noqa: E402

EGL_PLATFORM_SURFACELESS_MESA = 0x31DD
_INSTALL_HINT = "install EGL and Mesa (Debian: apt-get install libegl1 libegl-mesa0 libgl1 libopengl0 libgl1-mesa-dri)"


class HeadlessGLError(UserFacingError):
    """No headless OpenGL context could be created."""


class HeadlessGL:
    """One current OpenGL context per process (EGL, no window) and framebuffers to render into."""

    _instance: HeadlessGL | None = None

    def __init__(self) -> None:
        display = EGL.eglGetPlatformDisplay(EGL_PLATFORM_SURFACELESS_MESA, EGL.EGL_DEFAULT_DISPLAY, None)
        major, minor = EGL.EGLint(), EGL.EGLint()
        if not display or not EGL.eglInitialize(display, ctypes.pointer(major), ctypes.pointer(minor)):
            raise HeadlessGLError(f"EGL surfaceless display unavailable; {_INSTALL_HINT}")
        attributes = (EGL.EGLint * 11)(
            EGL.EGL_SURFACE_TYPE, EGL.EGL_PBUFFER_BIT, EGL.EGL_RED_SIZE, 8, EGL.EGL_GREEN_SIZE, 8, EGL.EGL_BLUE_SIZE, 8,
            EGL.EGL_RENDERABLE_TYPE, EGL.EGL_OPENGL_BIT, EGL.EGL_NONE,
        )
        config, count = EGL.EGLConfig(), EGL.EGLint()
        if not EGL.eglChooseConfig(display, attributes, ctypes.pointer(config), 1, ctypes.pointer(count)) or count.value < 1:
            raise HeadlessGLError(f"no EGL config for desktop OpenGL; {_INSTALL_HINT}")
        EGL.eglBindAPI(EGL.EGL_OPENGL_API)
        context = EGL.eglCreateContext(display, config, EGL.EGL_NO_CONTEXT, None)
        if not context or not EGL.eglMakeCurrent(display, EGL.EGL_NO_SURFACE, EGL.EGL_NO_SURFACE, context):
            raise HeadlessGLError(f"could not create a current EGL context; {_INSTALL_HINT}")
        self.display, self.context = display, context
        self.renderer = GL.glGetString(GL.GL_RENDERER).decode()
        self._framebuffers: dict[int, int] = {}
        live2d.init()
        live2d.glInit()

    @classmethod
    def current(cls) -> HeadlessGL:
        """This process's context, created on first use."""
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def bind(self, size: int) -> None:
        """Make a ``size×size`` RGBA framebuffer the render target and clear it to transparent.

        GL errors left pending are cleared first: loading a Cubism 2 model leaves
        ``GL_INVALID_FRAMEBUFFER_OPERATION`` set, which PyOpenGL would raise on the next checked call."""
        while GL.glGetError() != GL.GL_NO_ERROR:
            pass
        if size not in self._framebuffers:
            framebuffer = GL.glGenFramebuffers(1)
            GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, framebuffer)
            texture = GL.glGenTextures(1)
            GL.glBindTexture(GL.GL_TEXTURE_2D, texture)
            GL.glTexImage2D(GL.GL_TEXTURE_2D, 0, GL.GL_RGBA8, size, size, 0, GL.GL_RGBA, GL.GL_UNSIGNED_BYTE, None)
            GL.glFramebufferTexture2D(GL.GL_FRAMEBUFFER, GL.GL_COLOR_ATTACHMENT0, GL.GL_TEXTURE_2D, texture, 0)
            if GL.glCheckFramebufferStatus(GL.GL_FRAMEBUFFER) != GL.GL_FRAMEBUFFER_COMPLETE:
                raise HeadlessGLError(f"could not create a {size}×{size} framebuffer")
            self._framebuffers[size] = framebuffer
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, self._framebuffers[size])
        GL.glViewport(0, 0, size, size)
        live2d.clearBuffer(0.0, 0.0, 0.0, 0.0)

    @staticmethod
    def read(size: int) -> np.ndarray:
        """The bound framebuffer as ``size×size×4`` uint8 RGBA, top row first (alpha premultiplied)."""
        pixels = GL.glReadPixels(0, 0, size, size, GL.GL_RGBA, GL.GL_UNSIGNED_BYTE)
        return np.frombuffer(pixels, np.uint8).reshape(size, size, 4)[::-1].copy()
