from django.contrib import admin
from django.contrib.staticfiles.urls import staticfiles_urlpatterns
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("messages_app.urls")),
]
# daphne serves no static files by itself; this serves them when DEBUG is on
# (a local run, the tests). With DEBUG off, serve STATIC_ROOT (collectstatic)
# from a proxy or WhiteNoise.
urlpatterns += staticfiles_urlpatterns()
