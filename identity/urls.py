"""URLs of the identity app, under /elsa/api/identity/."""

from django.urls import path

from identity import api

urlpatterns = [
    path("login", api.LoginView.as_view(), name="identity-login"),
    path("refresh-token", api.RefreshTokenView.as_view(), name="identity-refresh-token"),
    path("logout", api.LogoutView.as_view(), name="identity-logout"),
    path("token", api.TokenView.as_view(), name="identity-token"),
    path("me", api.MeView.as_view(), name="identity-me"),
    path("applications", api.ApplicationListView.as_view(), name="identity-applications"),
    path("applications/<int:pk>", api.ApplicationDetailView.as_view(), name="identity-application"),
    path("applications/<int:pk>/rotate", api.ApplicationRotateView.as_view(), name="identity-application-rotate"),
    path("applications/<int:pk>/disable", api.ApplicationDisableView.as_view(), name="identity-application-disable"),
    path("applications/<int:pk>/enable", api.ApplicationEnableView.as_view(), name="identity-application-enable"),
    path("users", api.UserListView.as_view(), name="identity-users"),
    path("users/<int:pk>", api.UserDetailView.as_view(), name="identity-user"),
    path("roles", api.RoleListView.as_view(), name="identity-roles"),
    path("roles/<int:pk>", api.RoleDetailView.as_view(), name="identity-role"),
]
